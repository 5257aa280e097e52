//! Autotune across real processes started by horovodrun (np 2): a loop of many small
//! allreduces whose every sum is checked while rank 0 tunes; every rank switches to the same
//! values in the same order; the CSV log has its header, one row per sample and a last row
//! with the chosen (sampled) values, which stay in force; bad autotune settings fail init naming them.

use hora_tests::run_job;

/// The `autotune: values ...` lines of `rank`, in order (what each rank switched to).
fn switches(stderr: &str, rank: usize) -> Vec<String> {
    let prefix = format!("[{rank}]<stderr>:");
    stderr
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.split_once("autotune: values ").map(|(_, v)| v))
        .map(|v| v.split(" rank=").next().unwrap_or(v).trim().to_owned())
        .collect()
}

fn tuned_job(transport: &[(&str, &str)], max_samples: usize, segments_tuned: bool) {
    let log = std::env::temp_dir().join(format!(
        "hora-autotune-{}-{}.csv",
        std::process::id(),
        transport.len()
    ));
    let log_s = log.display().to_string();
    let samples = max_samples.to_string();
    let mut env = vec![
        ("HOROVOD_AUTOTUNE", "1"),
        ("HOROVOD_AUTOTUNE_LOG", log_s.as_str()),
        ("HOROVOD_AUTOTUNE_WARMUP_SAMPLES", "1"),
        ("HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE", "4"),
        ("HOROVOD_AUTOTUNE_BAYES_OPT_MAX_SAMPLES", samples.as_str()),
        ("HOROVOD_LOG_LEVEL", "info"),
    ];
    env.extend_from_slice(transport);
    // (1 warm-up + max_samples) samples of 4 steps, and as many steps again at the best values.
    let steps = (2 * (1 + max_samples) * 4 + 40).to_string();
    let r = run_job(2, &["autotune", &steps, "24", "300"], &env);
    let diag = format!("{env:?}\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, Some(0), "{diag}");
    for rank in 0..2 {
        assert!(
            r.stdout.contains(&format!("rank {rank}: autotune OK")),
            "{diag}"
        );
    }

    // Both ranks switched to the same values, in the same order.
    let (s0, s1) = (switches(&r.stderr, 0), switches(&r.stderr, 1));
    assert!(!s0.is_empty(), "no switch logged\n{diag}");
    assert_eq!(s0, s1, "{diag}");

    // The log: header, max_samples rows, then the best row.
    let text = std::fs::read_to_string(&log).expect("autotune log written");
    let _ = std::fs::remove_file(&log);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("tensor_fusion_threshold,segment_bytes,cache_enabled,score"),
        "{text}"
    );
    let rows: Vec<Vec<u64>> = lines
        .map(|l| {
            let cols: Vec<u64> = l.split(',').map(|c| c.parse().expect(l)).collect();
            assert_eq!(cols.len(), 4, "{l}");
            assert!(cols[2] <= 1 && cols[3] > 0, "{l}");
            cols
        })
        .collect();
    assert_eq!(rows.len(), max_samples + 1, "{text}");
    let (best, samples) = rows.split_last().unwrap();
    // The last row holds sampled values (those the model rates best).
    assert!(
        samples.iter().any(|r| r[..3] == best[..3]),
        "the last row's values were sampled\n{text}"
    );
    // The first sample scored the configured values (HOROVOD_FUSION_THRESHOLD's default, the
    // cache on).
    assert_eq!((samples[0][0], samples[0][2]), (128 << 20, 1), "{text}");
    // Shared memory reads no segment size, so it is left alone there.
    let segments_moved = samples.iter().any(|r| r[1] != 1 << 20);
    assert_eq!(segments_moved, segments_tuned, "{text}");
    // The values in force at the end are the best row's, and tuning said it ended.
    let want = format!(
        "fusion_threshold={} segment_bytes={} cache_enabled={}",
        best[0], best[1], best[2]
    );
    assert_eq!(s0.last(), Some(&want), "{diag}");
    assert!(
        r.stderr
            .contains("autotune: done; the best values stay fixed"),
        "{diag}"
    );
}

#[test]
fn autotune_over_tcp_converges_ranks_agree_and_sums_stay_right() {
    // The ring reads the segment size, so all three knobs move.
    tuned_job(&[("HOROVOD_SHM", "0")], 8, true);
}

#[test]
fn autotune_over_shared_memory_tunes_fusion_and_cache() {
    tuned_job(&[], 6, false);
}

#[test]
fn bad_autotune_settings_fail_init_naming_the_variable() {
    for (var, val) in [
        ("HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE", "0"),
        ("HOROVOD_AUTOTUNE_GAUSSIAN_PROCESS_NOISE", "-1"),
        ("HOROVOD_AUTOTUNE", "sometimes"),
    ] {
        let r = run_job(
            2,
            &["autotune", "2", "2", "2"],
            &[("HOROVOD_AUTOTUNE", "1"), (var, val)],
        );
        assert_ne!(r.code, Some(0), "{var}={val}");
        assert!(
            r.stderr.contains("init failed") && r.stderr.contains(var),
            "{var}={val}: {}",
            r.stderr
        );
    }
}
