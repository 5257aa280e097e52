//! Autotune (`HOROVOD_AUTOTUNE=1`): rank 0 tunes the knobs the engine reads at run time from
//! the throughput it measures, and the coordinator carries each trial's values to every rank.
//!
//! # Design overview
//!
//! [`Autotuner`] is sans-IO, like the coordinator: the engine feeds it what completed and when
//! ([`Autotuner::record`]) and gets back the values to switch to; it reads no clock and writes
//! no file (the engine writes the CSV rows it yields, [`Autotuner::poll_row`]). It does not
//! apply values either: the coordinator puts them in its next message ([`Knobs`] in a
//! `DownMsg`), so every rank switches between the same two messages.
//!
//! # How it works
//!
//! * A *step* ends when a tensor name comes back (training steps repeat their names); its
//!   score is bytes completed over the step's wall time. A *sample* is `steps_per_sample`
//!   steps scored by their median, which shrugs off a slow step (a checkpoint, a GC pause,
//!   the step the values changed in).
//! * The first `warmup_samples` samples are dropped. Then each sample scores the current
//!   values: the first is the configured values, three more are a fixed spread over the
//!   space, and the rest are chosen by expected improvement over a Gaussian process
//!   (`bayes.rs`), as Horovod does. After `max_samples` the sampled values the model rates
//!   best (highest posterior mean, which discounts a lucky sample) are fixed.
//! * The space is the unit cube, one axis per knob that is tuned: the fusion threshold (log
//!   scale, 4 KiB to 128 MiB), the ring's segment size (log scale, 4 KiB to 16 MiB; only when
//!   the job's collectives are hora's ring, the only ones that read it) and the response
//!   cache (off below 0.5, on above). Horovod tunes its categorical knobs one after another
//!   after the numeric ones; one joint model needs no extra samples per category and lets the
//!   cache's effect depend on the threshold.

mod bayes;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

pub use crate::coordinator::Knobs;
pub use bayes::BayesOpt;

use crate::config::{AutotuneFixed, Tuning};

/// The log2 range of the fusion threshold, bytes.
const FUSION_LOG2: (f64, f64) = (12.0, 27.0);
/// The log2 range of the segment size, bytes.
const SEGMENT_LOG2: (f64, f64) = (12.0, 24.0);
/// Points sampled after the configured values, before the model chooses.
const DESIGN: [f64; 3] = [0.2, 0.8, 0.5];

/// How the tuner samples and searches.
#[derive(Debug, Clone, PartialEq)]
pub struct AutotuneParams {
    /// Samples dropped at the start.
    pub warmup_samples: usize,
    /// Steps per sample (at least 1).
    pub steps_per_sample: usize,
    /// Samples scored before the best values are fixed (at least 1).
    pub max_samples: usize,
    /// Gaussian-process noise.
    pub noise: f64,
    /// Knobs left as configured.
    pub fixed: AutotuneFixed,
    /// Whether the job's collectives read the segment size (hora's ring does; shared
    /// memory and MPI do not, so tuning it there would only add noise).
    pub tune_segments: bool,
}

impl AutotuneParams {
    /// The parameters `HOROVOD_AUTOTUNE*` ask for, or `None` when autotune is off.
    pub fn from_tuning(t: &Tuning, tune_segments: bool) -> Option<Self> {
        let fixed = t.autotune?;
        Some(Self {
            warmup_samples: t.autotune_warmup_samples,
            steps_per_sample: t.autotune_steps_per_sample.max(1),
            max_samples: t.autotune_max_samples.max(1),
            noise: t.autotune_noise,
            fixed,
            tune_segments,
        })
    }
}

/// One knob the tuner moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Axis {
    Fusion,
    Segment,
    Cache,
}

/// One CSV row: a sample's values and score, or (last) the best values, kept from then on,
/// with the score the model predicts for them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// The values scored.
    pub knobs: Knobs,
    /// Bytes completed per second (median of the sample's steps; for the best row, the
    /// model's estimate).
    pub score: f64,
    /// This is the final row: the best values, fixed from now on.
    pub best: bool,
}

impl Row {
    /// The CSV header.
    pub const HEADER: &'static str = "tensor_fusion_threshold,segment_bytes,cache_enabled,score";

    /// The row as CSV (no newline).
    pub fn csv(&self) -> String {
        format!(
            "{},{},{},{:.0}",
            self.knobs.fusion_threshold,
            self.knobs.segment_bytes,
            u8::from(self.knobs.cache_enabled),
            self.score
        )
    }
}

/// Rank 0's tuner: collects samples, scores them and chooses the next values.
#[derive(Debug)]
pub struct Autotuner {
    params: AutotuneParams,
    axes: Vec<Axis>,
    opt: BayesOpt,
    initial: Knobs,
    current: Knobs,
    current_x: Vec<f64>,
    warmup_left: usize,
    scored: usize,
    done: bool,
    /// Times each name completed in this sample.
    counts: HashMap<String, u32>,
    steps: Vec<f64>,
    step_start: Option<Instant>,
    step_bytes: u64,
    rows: VecDeque<Row>,
}

impl Autotuner {
    /// A tuner starting from `initial`; `None` when every knob is fixed (nothing to tune).
    pub fn new(params: AutotuneParams, initial: Knobs) -> Option<Self> {
        let mut axes = Vec::new();
        if !params.fixed.fusion_threshold {
            axes.push(Axis::Fusion);
        }
        if params.tune_segments && !params.fixed.segment_bytes {
            axes.push(Axis::Segment);
        }
        if !params.fixed.cache {
            axes.push(Axis::Cache);
        }
        if axes.is_empty() {
            return None;
        }
        let mut t = Self {
            opt: BayesOpt::new(axes.len(), params.noise),
            warmup_left: params.warmup_samples,
            params,
            axes,
            initial,
            current: initial,
            current_x: Vec::new(),
            scored: 0,
            done: false,
            counts: HashMap::new(),
            steps: Vec::new(),
            step_start: None,
            step_bytes: 0,
            rows: VecDeque::new(),
        };
        t.current_x = t.encode(initial);
        Some(t)
    }

    /// The values in force.
    pub fn current(&self) -> Knobs {
        self.current
    }

    /// True once the best values are fixed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Samples scored so far (warm-up excluded).
    pub fn scored(&self) -> usize {
        self.scored
    }

    /// The next CSV row, if a sample ended.
    pub fn poll_row(&mut self) -> Option<Row> {
        self.rows.pop_front()
    }

    /// Takes one completed collective (its tensor names and bytes) at `now`; returns the
    /// values every rank should switch to when a sample ends with a change.
    pub fn record<'n>(
        &mut self,
        now: Instant,
        names: impl IntoIterator<Item = &'n str>,
        bytes: u64,
    ) -> Option<Knobs> {
        if self.done {
            return None;
        }
        let start = *self.step_start.get_or_insert(now);
        let step = self.steps.len() as u32;
        let names: Vec<&str> = names.into_iter().collect();
        let mut ends_step = false;
        for &name in &names {
            let c = self.counts.entry(name.to_owned()).or_insert(0);
            ends_step |= *c > step;
            *c += 1;
        }
        if ends_step {
            let secs = now.saturating_duration_since(start).as_secs_f64();
            // A step too short to time scores as very fast rather than dividing by zero.
            self.steps.push(self.step_bytes as f64 / secs.max(1e-9));
            self.step_start = Some(now);
            self.step_bytes = 0;
        }
        self.step_bytes = self.step_bytes.saturating_add(bytes);
        if self.steps.len() < self.params.steps_per_sample {
            return None;
        }
        let score = median(&mut self.steps);
        // This record opens the next sample's first step.
        self.counts.clear();
        for name in names {
            self.counts.insert(name.to_owned(), 1);
        }
        self.steps.clear();
        self.step_start = Some(now);
        self.end_sample(score)
    }

    /// Scores the current values with `score` and moves on.
    fn end_sample(&mut self, score: f64) -> Option<Knobs> {
        if self.warmup_left > 0 {
            self.warmup_left -= 1;
            return None;
        }
        self.rows.push_back(Row {
            knobs: self.current,
            score,
            best: false,
        });
        self.opt.observe(self.current_x.clone(), score);
        self.scored += 1;
        let next_x = if self.scored >= self.params.max_samples {
            let (x, best) = self.opt.best_by_model().map(|(x, s)| (x.to_vec(), s))?;
            self.done = true;
            let knobs = self.decode(&x);
            self.rows.push_back(Row {
                knobs,
                score: best,
                best: true,
            });
            x
        } else if let Some(&d) = DESIGN.get(self.scored - 1) {
            // Alternate the design's corners per axis so two axes are not moved in lockstep.
            (0..self.axes.len())
                .map(|i| if i % 2 == 1 && d != 0.5 { 1.0 - d } else { d })
                .collect()
        } else {
            self.opt.suggest()
        };
        let next = self.decode(&next_x);
        self.current_x = next_x;
        let changed = next != self.current;
        self.current = next;
        // The final values are sent even when unchanged, so every rank logs the end.
        (changed || self.done).then_some(next)
    }

    fn encode(&self, k: Knobs) -> Vec<f64> {
        let log = |v: u64, (lo, hi): (f64, f64)| {
            (((v.max(1) as f64).log2() - lo) / (hi - lo)).clamp(0.0, 1.0)
        };
        self.axes
            .iter()
            .map(|a| match a {
                Axis::Fusion => log(k.fusion_threshold, FUSION_LOG2),
                Axis::Segment => log(k.segment_bytes, SEGMENT_LOG2),
                Axis::Cache => {
                    if k.cache_enabled {
                        0.75
                    } else {
                        0.25
                    }
                }
            })
            .collect()
    }

    fn decode(&self, x: &[f64]) -> Knobs {
        let bytes = |u: f64, (lo, hi): (f64, f64)| {
            let v = (lo + u.clamp(0.0, 1.0) * (hi - lo)).exp2();
            // Whole KiB: values that differ by a few bytes are the same trial.
            ((v / 1024.0).round() as u64).max(1) * 1024
        };
        let mut k = self.initial;
        for (a, &u) in self.axes.iter().zip(x) {
            match a {
                Axis::Fusion => k.fusion_threshold = bytes(u, FUSION_LOG2),
                Axis::Segment => k.segment_bytes = bytes(u, SEGMENT_LOG2).max(4096),
                Axis::Cache => k.cache_enabled = u >= 0.5,
            }
        }
        k
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
