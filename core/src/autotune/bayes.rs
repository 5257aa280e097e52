//! Bayesian optimisation over the unit cube: a Gaussian process with a squared-exponential
//! kernel models score as a function of the knobs, and the next point is the candidate with
//! the largest expected improvement over the best score so far.
//!
//! How it works: scores are standardised (zero mean, unit variance) so one length scale and
//! one noise term suit any throughput; the posterior at a point comes from a Cholesky solve
//! of the kernel matrix (at most a few dozen samples, so O(n³) is nothing). Expected
//! improvement is maximised over a fixed number of pseudo-random candidates plus small
//! moves around the best point, drawn from a seeded generator so a run is reproducible.
//! Sans-IO: no clock, no randomness from the system.

/// Length scale of the kernel in the unit cube: a knob's effect is assumed smooth over about
/// a quarter of its (logarithmic) range.
const LENGTH_SCALE: f64 = 0.25;
/// Candidates scored per suggestion.
const CANDIDATES: usize = 2000;
/// Exploration margin of expected improvement, in standard deviations of the scores.
const XI: f64 = 0.01;

/// The optimiser's state: the samples seen and its random generator.
#[derive(Debug, Clone)]
pub struct BayesOpt {
    dims: usize,
    noise: f64,
    xs: Vec<Vec<f64>>,
    ys: Vec<f64>,
    rng: u64,
}

impl BayesOpt {
    /// An optimiser over `[0, 1]^dims` with `noise` added to the kernel's diagonal.
    pub fn new(dims: usize, noise: f64) -> Self {
        Self {
            dims,
            // A little jitter keeps the Cholesky factorisation stable with noise 0.
            noise: noise.max(1e-6),
            xs: Vec::new(),
            ys: Vec::new(),
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Records that `x` scored `y` (higher is better).
    pub fn observe(&mut self, x: Vec<f64>, y: f64) {
        debug_assert_eq!(x.len(), self.dims);
        self.xs.push(x);
        self.ys.push(y);
    }

    /// Number of samples observed.
    pub fn samples(&self) -> usize {
        self.ys.len()
    }

    /// The best sample so far (its point and score).
    pub fn best(&self) -> Option<(&[f64], f64)> {
        let i = (0..self.ys.len()).max_by(|&a, &b| self.ys[a].total_cmp(&self.ys[b]))?;
        Some((&self.xs[i], self.ys[i]))
    }

    /// The sampled point the model rates best, with the score it predicts there: with noisy
    /// scores the single highest sample is too often a lucky one (the winner's curse), while
    /// the posterior mean pools each point's neighbours.
    pub fn best_by_model(&self) -> Option<(&[f64], f64)> {
        let Some(model) = Model::fit(&self.xs, &self.ys, self.noise) else {
            return self.best();
        };
        self.xs
            .iter()
            .map(|x| (x.as_slice(), model.predict(x).0))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(x, m)| (x, model.mean + m * model.sd))
    }

    /// The point with the largest expected improvement (the cube's centre before any sample).
    pub fn suggest(&mut self) -> Vec<f64> {
        let Some(model) = Model::fit(&self.xs, &self.ys, self.noise) else {
            return vec![0.5; self.dims];
        };
        let best_x = self.best().map(|(x, _)| x.to_vec()).unwrap_or_default();
        let mut top = (f64::NEG_INFINITY, vec![0.5; self.dims]);
        let rng = &mut self.rng;
        for i in 0..CANDIDATES {
            let x: Vec<f64> = if i % 4 == 0 && !best_x.is_empty() {
                // Local moves refine around the incumbent; the rest explore the whole cube.
                best_x
                    .iter()
                    .map(|&b| (b + (uniform(rng) - 0.5) * 0.2).clamp(0.0, 1.0))
                    .collect()
            } else {
                (0..self.dims).map(|_| uniform(rng)).collect()
            };
            let ei = model.expected_improvement(&x);
            if ei > top.0 {
                top = (ei, x);
            }
        }
        top.1
    }
}

/// A uniform number in [0, 1) from the xorshift64* state `s`.
fn uniform(s: &mut u64) -> f64 {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
    (r >> 11) as f64 / (1u64 << 53) as f64
}

/// A fitted Gaussian process on standardised scores.
struct Model<'a> {
    xs: &'a [Vec<f64>],
    /// Lower Cholesky factor of K + noise·I.
    chol: Vec<Vec<f64>>,
    /// (K + noise·I)⁻¹ y.
    alpha: Vec<f64>,
    /// Best standardised score.
    best: f64,
    /// Mean and standard deviation the scores were standardised with.
    mean: f64,
    sd: f64,
}

fn kernel(a: &[f64], b: &[f64]) -> f64 {
    let d2: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    (-d2 / (2.0 * LENGTH_SCALE * LENGTH_SCALE)).exp()
}

impl<'a> Model<'a> {
    fn fit(xs: &'a [Vec<f64>], ys: &[f64], noise: f64) -> Option<Self> {
        let n = ys.len();
        if n == 0 {
            return None;
        }
        let mean = ys.iter().sum::<f64>() / n as f64;
        let var = ys.iter().map(|y| (y - mean) * (y - mean)).sum::<f64>() / n as f64;
        let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
        let y: Vec<f64> = ys.iter().map(|v| (v - mean) / sd).collect();
        let mut k = vec![vec![0.0; n]; n];
        for i in 0..n {
            for j in 0..n {
                k[i][j] = kernel(&xs[i], &xs[j]) + if i == j { noise } else { 0.0 };
            }
        }
        let chol = cholesky(k)?;
        let alpha = back_solve(&chol, &forward_solve(&chol, &y));
        let best = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Self {
            xs,
            chol,
            alpha,
            best,
            mean,
            sd,
        })
    }

    /// Posterior mean and standard deviation at `x`.
    fn predict(&self, x: &[f64]) -> (f64, f64) {
        let ks: Vec<f64> = self.xs.iter().map(|xi| kernel(xi, x)).collect();
        let mean = ks.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let v = forward_solve(&self.chol, &ks);
        let var = (1.0 - v.iter().map(|a| a * a).sum::<f64>()).max(1e-12);
        (mean, var.sqrt())
    }

    fn expected_improvement(&self, x: &[f64]) -> f64 {
        let (mu, sigma) = self.predict(x);
        let z = (mu - self.best - XI) / sigma;
        (mu - self.best - XI) * normal_cdf(z) + sigma * normal_pdf(z)
    }
}

/// Lower-triangular L with L·Lᵀ = a; `None` if `a` is not positive definite.
fn cholesky(a: Vec<Vec<f64>>) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - s;
                if d <= 0.0 {
                    return None;
                }
                l[i][j] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    Some(l)
}

/// Solves L·x = b.
fn forward_solve(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; b.len()];
    for i in 0..b.len() {
        let s: f64 = (0..i).map(|k| l[i][k] * x[k]).sum();
        x[i] = (b[i] - s) / l[i][i];
    }
    x
}

/// Solves Lᵀ·x = b.
fn back_solve(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k][i] * x[k]).sum();
        x[i] = (b[i] - s) / l[i][i];
    }
    x
}

fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

fn normal_cdf(z: f64) -> f64 {
    0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2))
}

/// The error function (Abramowitz and Stegun 7.1.26, error below 1.5e-7).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    if x >= 0.0 { y } else { -y }
}

#[cfg(test)]
pub(super) fn erf_for_test(x: f64) -> f64 {
    erf(x)
}
