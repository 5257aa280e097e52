use std::time::{Duration, Instant};

use super::bayes::erf_for_test;
use super::{AutotuneParams, Autotuner, BayesOpt, Knobs, Row};
use crate::config::AutotuneFixed;

#[test]
fn erf_matches_known_values() {
    for (x, want) in [
        (0.0, 0.0),
        (0.5, 0.520_499_9),
        (1.0, 0.842_700_8),
        (-2.0, -0.995_322_3),
    ] {
        assert!((erf_for_test(x) - want).abs() < 1e-6, "erf({x})");
    }
}

/// A smooth function with one peak at (0.3, 0.7) of height 1.
fn peak(x: &[f64]) -> f64 {
    1.0 - (x[0] - 0.3).powi(2) - (x[1] - 0.7).powi(2)
}

#[test]
fn bayes_opt_finds_the_peak_of_a_known_function_in_20_samples() {
    let mut opt = BayesOpt::new(2, 0.01);
    for _ in 0..20 {
        let x = opt.suggest();
        let y = peak(&x);
        opt.observe(x, y);
    }
    let (x, y) = opt.best().unwrap();
    assert!(y > 0.99, "best {y} at {x:?}");
    assert!(
        (x[0] - 0.3).abs() < 0.1 && (x[1] - 0.7).abs() < 0.1,
        "{x:?}"
    );
}

#[test]
fn bayes_opt_beats_random_search_with_the_same_budget() {
    // 12 samples: the model's choices get closer than a fixed pseudo-random design.
    let mut opt = BayesOpt::new(2, 0.01);
    for _ in 0..12 {
        let x = opt.suggest();
        let y = peak(&x);
        opt.observe(x, y);
    }
    let mut s = 12345u64;
    let mut random_best = f64::NEG_INFINITY;
    for _ in 0..12 {
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let a = (s >> 11) as f64 / (1u64 << 53) as f64;
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let b = (s >> 11) as f64 / (1u64 << 53) as f64;
        random_best = random_best.max(peak(&[a, b]));
    }
    assert!(opt.best().unwrap().1 > random_best);
}

#[test]
fn the_model_picks_the_better_point_over_a_lucky_sample() {
    // Around 0.7 every sample is good; the single best sample is a noisy spike at 0.1.
    let mut opt = BayesOpt::new(1, 0.3);
    for (x, y) in [
        (0.1, 1.3),
        (0.15, 0.2),
        (0.05, 0.1),
        (0.65, 1.0),
        (0.7, 1.05),
        (0.75, 1.0),
    ] {
        opt.observe(vec![x], y);
    }
    assert_eq!(opt.best().unwrap().0, [0.1]);
    let (x, est) = opt.best_by_model().unwrap();
    assert!((0.6..=0.8).contains(&x[0]), "{x:?}");
    assert!(est > 0.5 && est < 1.3, "{est}");
}

#[test]
fn bayes_opt_copes_with_noisy_scores() {
    let mut opt = BayesOpt::new(1, 0.8);
    let mut s = 7u64;
    for _ in 0..20 {
        let x = opt.suggest();
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let noise = ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.02;
        let y = 1.0 - (x[0] - 0.6).powi(2) + noise;
        opt.observe(x, y);
    }
    let (x, _) = opt.best().unwrap();
    assert!((x[0] - 0.6).abs() < 0.15, "{x:?}");
}

fn defaults() -> Knobs {
    Knobs {
        fusion_threshold: 128 << 20,
        segment_bytes: 1 << 20,
        cache_enabled: true,
    }
}

fn params(max_samples: usize, fixed: AutotuneFixed) -> AutotuneParams {
    AutotuneParams {
        warmup_samples: 2,
        steps_per_sample: 5,
        max_samples,
        noise: 0.05,
        fixed,
        tune_segments: true,
    }
}

/// A synthetic workload: 50 tensors of 4 KiB per step, each step taking a time that depends
/// on the values in force, fastest at a 1 MiB threshold, a 256 KiB segment and the cache on.
fn step_time(k: Knobs) -> Duration {
    let f = ((k.fusion_threshold as f64).log2() - 20.0).abs();
    let s = ((k.segment_bytes as f64).log2() - 18.0).abs();
    let c = if k.cache_enabled { 0.0 } else { 2.0 };
    Duration::from_micros((1000.0 + 100.0 * (f * f + s * s + c)) as u64)
}

/// Drives `t` through steps until it is done (or `max_steps`); returns the rows it wrote.
fn drive(t: &mut Autotuner, max_steps: usize) -> Vec<Row> {
    let mut now = Instant::now();
    let names: Vec<String> = (0..50).map(|i| format!("grad.{i}")).collect();
    let mut rows = Vec::new();
    let mut applied = t.current();
    for _ in 0..max_steps {
        let per = step_time(applied) / 50;
        for n in &names {
            now += per;
            if let Some(k) = t.record(now, [n.as_str()], 4096) {
                // Like the engine: the next message carries the values, all ranks switch.
                applied = k;
            }
            rows.extend(std::iter::from_fn(|| t.poll_row()));
        }
        if t.is_done() {
            break;
        }
    }
    assert_eq!(applied, t.current());
    rows
}

#[test]
fn autotuner_converges_on_a_synthetic_workload_and_fixes_the_best() {
    let mut t = Autotuner::new(params(20, AutotuneFixed::default()), defaults()).unwrap();
    let rows = drive(&mut t, 10_000);
    assert!(t.is_done());
    // One row per sample and a last one with the best values.
    assert_eq!(rows.len(), 21, "{rows:?}");
    assert!(rows[..20].iter().all(|r| !r.best) && rows[20].best);
    // The chosen values are sampled ones, and they stay.
    let best = rows[..20]
        .iter()
        .find(|r| r.knobs == rows[20].knobs)
        .unwrap();
    assert_eq!(t.current(), best.knobs);
    // The first sample scores the configured values; the best beats them clearly.
    assert_eq!(rows[0].knobs, defaults());
    assert!(
        best.score > rows[0].score * 1.5,
        "{} vs {}",
        best.score,
        rows[0].score
    );
    // Near the optimum of the synthetic cost.
    let k = best.knobs;
    assert!(k.cache_enabled);
    assert!(
        step_time(k) < Duration::from_micros(1400),
        "{k:?}: {:?}",
        step_time(k)
    );
    // Nothing changes once done.
    assert!(t.record(Instant::now(), ["grad.0"], 4096).is_none());
}

#[test]
fn warmup_samples_are_not_scored() {
    let mut t = Autotuner::new(params(3, AutotuneFixed::default()), defaults()).unwrap();
    let mut now = Instant::now();
    let mut steps = 0;
    while t.scored() == 0 {
        for n in ["a", "b"] {
            now += Duration::from_millis(1);
            t.record(now, [n], 100);
        }
        steps += 1;
        assert!(steps < 1000);
    }
    // Two warm-up samples of five steps, then five steps of the first scored sample (the
    // step that closes a sample is the first repeat of a name, one record into the next).
    assert_eq!(steps, 3 * 5 + 1);
}

#[test]
fn fixed_knobs_are_never_moved() {
    let fixed = AutotuneFixed {
        fusion_threshold: true,
        segment_bytes: false,
        cache: true,
    };
    let mut t = Autotuner::new(params(8, fixed), defaults()).unwrap();
    let rows = drive(&mut t, 10_000);
    assert!(t.is_done());
    for r in &rows {
        assert_eq!(r.knobs.fusion_threshold, defaults().fusion_threshold);
        assert!(r.knobs.cache_enabled);
    }
    assert!(
        rows.iter()
            .any(|r| r.knobs.segment_bytes != defaults().segment_bytes)
    );
}

#[test]
fn nothing_to_tune_gives_no_tuner() {
    let all = AutotuneFixed {
        fusion_threshold: true,
        segment_bytes: true,
        cache: true,
    };
    assert!(Autotuner::new(params(5, all), defaults()).is_none());
    // Without a ring the segment size is not a knob either.
    let p = AutotuneParams {
        tune_segments: false,
        ..params(
            5,
            AutotuneFixed {
                segment_bytes: false,
                ..all
            },
        )
    };
    assert!(Autotuner::new(p, defaults()).is_none());
}

#[test]
fn csv_rows_have_the_header_columns() {
    let r = Row {
        knobs: defaults(),
        score: 1234.6,
        best: false,
    };
    assert_eq!(Row::HEADER.split(',').count(), r.csv().split(',').count());
    assert_eq!(r.csv(), "134217728,1048576,1,1235");
}
