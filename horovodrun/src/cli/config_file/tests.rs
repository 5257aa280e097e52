use std::path::Path;

use super::*;

/// Horovod's own test configuration (test/single/data/config.test.yaml), minus what hora
/// refuses (MPI threads off, NCCL streams, thread affinity) and with cycle marks off.
const HOROVOD_LIKE: &str = "\
controller: gloo

params:
  fusion_threshold_mb: 32
  cycle_time_ms: 10
  cache_capacity: 2048
  hierarchical_allreduce: true
  hierarchical_allgather: true

autotune:
  enabled: true
  log_file: 'horovod_autotune_log.txt'
  warmup_samples: 5
  steps_per_sample: 20
  bayes_opt_max_samples: 50
  gaussian_process_noise: 0.9

timeline:
  filename: 'horovod_timeline.json'
  mark_cycles: false

stall_check:
  enabled: true
  warning_time_seconds: 120
  shutdown_time_seconds: 240

library_options:
  mpi_threads_disable: false
  gloo_timeout_seconds: 60


logging:
  level: INFO
  hide_timestamp: true
";

fn applied(text: &str, start: Tunables) -> Result<Tunables, String> {
    let mut t = start;
    parse(text)
        .map_err(|(l, e)| format!("{l}: {e}"))?
        .apply(Path::new("c.yaml"), &mut t)?;
    Ok(t)
}

#[test]
fn horovods_layout_sets_every_key() {
    let cfg = parse(HOROVOD_LIKE).unwrap();
    assert_eq!(cfg.controller(), Ok(Some(Controller::Gloo)));
    let t = applied(HOROVOD_LIKE, Tunables::default()).unwrap();
    assert_eq!(t.fusion_threshold_mb, Some(32));
    assert_eq!(t.cycle_time_ms, Some(10.0));
    assert_eq!(t.cache_capacity, Some(2048));
    assert_eq!(t.hierarchical_allreduce, Some(true));
    assert_eq!(t.hierarchical_allgather, Some(true));
    assert_eq!(t.autotune, Some(true));
    assert_eq!(t.timeline_filename, Some("horovod_timeline.json".into()));
    assert_eq!(t.timeline_mark_cycles, Some(false));
    assert_eq!(t.no_stall_check, Some(false));
    assert_eq!(t.stall_check_warning_time_seconds, Some(120));
    assert_eq!(t.stall_check_shutdown_time_seconds, Some(240));
    assert_eq!(t.mpi_threads_disable, Some(false));
    assert_eq!(t.gloo_timeout_seconds, Some(60));
    assert_eq!(t.log_level.as_deref(), Some("INFO"));
    assert_eq!(t.log_with_timestamp, Some(false));
    assert!(t.refusals().is_empty(), "{:?}", t.refusals());
    let env = t.env();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("HOROVOD_FUSION_THRESHOLD"), Some("33554432"));
    assert_eq!(get("HOROVOD_LOG_HIDE_TIME"), Some("1"));
    assert_eq!(get("HOROVOD_TIMELINE_MARK_CYCLES"), Some("0"));
    assert_eq!(get("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"), Some("240"));
    assert_eq!(get("HOROVOD_AUTOTUNE"), Some("1"));
    assert_eq!(
        get("HOROVOD_AUTOTUNE_LOG"),
        Some("horovod_autotune_log.txt")
    );
    assert_eq!(get("HOROVOD_AUTOTUNE_WARMUP_SAMPLES"), Some("5"));
    assert_eq!(get("HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE"), Some("20"));
    assert_eq!(get("HOROVOD_AUTOTUNE_BAYES_OPT_MAX_SAMPLES"), Some("50"));
    assert_eq!(get("HOROVOD_AUTOTUNE_GAUSSIAN_PROCESS_NOISE"), Some("0.9"));
}

#[test]
fn the_command_line_wins_and_refusals_name_the_key() {
    let given = Tunables {
        fusion_threshold_mb: Some(256),
        ..Tunables::default()
    };
    let t = applied(
        "params:\n  fusion_threshold_mb: 32\n  cache_capacity: 5\n",
        given,
    )
    .unwrap();
    assert_eq!(t.fusion_threshold_mb, Some(256));
    assert_eq!(t.cache_capacity, Some(5));
    let t = applied(
        "library_options:\n  thread_affinity: 1\n",
        Tunables::default(),
    )
    .unwrap();
    let r = t.refusals();
    assert_eq!(r.len(), 1);
    assert!(
        r[0].starts_with("`library_options.thread_affinity` in --config-file c.yaml:"),
        "{r:?}"
    );
    // The same setting given as a flag is named as the flag.
    let t = Tunables {
        thread_affinity: Some(1),
        ..Tunables::default()
    };
    assert!(t.refusals()[0].starts_with("--thread-affinity:"));
}

#[test]
fn scalars_read_as_pyyaml_reads_them() {
    for (text, want) in [
        ("yes", Scalar::Bool(true)),
        ("Off", Scalar::Bool(false)),
        ("~", Scalar::Null),
        ("", Scalar::Null),
        ("-3", Scalar::Int(-3)),
        ("0.25", Scalar::Float(0.25)),
        ("1e3", Scalar::Float(1000.0)),
        ("'it''s'", Scalar::Str("it's".into())),
        (
            "\"a\\tb # not a comment\"",
            Scalar::Str("a\tb # not a comment".into()),
        ),
        ("eth0", Scalar::Str("eth0".into())),
    ] {
        assert_eq!(scalar(text, 1), Ok(want), "{text}");
    }
    assert_eq!(strip_comment("a: 'x # y' # z"), "a: 'x # y' ");
}

#[test]
fn what_is_not_horovods_layout_is_an_error_naming_the_line() {
    for (text, line, words) in [
        ("params:\n  bogus: 1\n", 2, "no key `bogus`"),
        (
            "tuning:\n  x: 1\n",
            1,
            "not one of Horovod's config sections",
        ),
        (
            "params:\n  fusion_threshold_mb: [1, 2]\n",
            2,
            "flow collection",
        ),
        ("params:\n  - 1\n", 2, "a list"),
        (
            "params:\n  cache_capacity: 1\n  cache_capacity: 2\n",
            3,
            "set twice",
        ),
        ("params:\n\tcache_capacity: 1\n", 2, "tabs"),
        ("params:\n  a:\n    b: 1\n", 2, "no value"),
        (
            "params:\n  cache_capacity: 1\n   cycle_time_ms: 2\n",
            3,
            "indented by 3",
        ),
        ("  cache_capacity: 1\n", 1, "outside a section"),
        ("params:\n  cache_capacity: &a 1\n", 2, "anchor"),
        ("logging:\n  level: |\n", 2, "block scalar"),
        ("just text\n", 1, "not a `key: value` line"),
    ] {
        let (l, e) = parse(text).expect_err(text);
        assert_eq!(l, line, "{text}: {e}");
        assert!(e.contains(words), "{text}: {e}");
    }
    for (text, words) in [
        (
            "params:\n  fusion_threshold_mb: -1\n",
            "params.fusion_threshold_mb` must be a whole number >= 0 (got -1)",
        ),
        (
            "params:\n  hierarchical_allreduce: 1\n",
            "must be true or false",
        ),
        ("params:\n  cycle_time_ms: -1\n", "milliseconds >= 0"),
        ("autotune:\n  gaussian_process_noise: 1.5\n", "[0, 1]"),
        ("logging:\n  level: LOUD\n", "TRACE, DEBUG"),
        ("library_options:\n  gloo_timeout_seconds: 0\n", ">= 1"),
        (
            "logging:\n  hide_timestamp: true\n  with_timestamp: true\n",
            "say the same thing",
        ),
    ] {
        let e = applied(text, Tunables::default()).expect_err(text);
        assert!(e.contains("c.yaml:2:") && e.contains(words), "{text}: {e}");
    }
    let e = parse("controller: nccl\n")
        .unwrap()
        .controller()
        .unwrap_err();
    assert!(e.contains("gloo or mpi") && e.contains("nccl"), "{e}");
    let e = load(Path::new("/nonexistent/c.yaml")).unwrap_err();
    assert!(
        e.contains("--config-file /nonexistent/c.yaml: cannot read it"),
        "{e}"
    );
}
