//! Every collective across real processes over TCP, started by horovodrun, at np = 2, 3, 4.

use hora_tests::run_job;

#[test]
fn collectives_are_correct_at_np_2_3_4() {
    for np in [2, 3, 4] {
        let r = run_job(np, &["collectives"], &[]);
        for rank in 0..np {
            assert!(
                r.stdout.contains(&format!("rank {rank}: collectives OK")),
                "np={np} rank {rank} did not finish\nstdout:\n{}\nstderr:\n{}",
                r.stdout,
                r.stderr
            );
        }
        assert_eq!(r.code, Some(0), "np={np}\n{}", r.stderr);
    }
}

#[test]
fn mismatched_shapes_error_on_every_rank() {
    let r = run_job(3, &["mismatch"], &[]);
    assert_eq!(
        r.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    for rank in 0..3 {
        let line = r
            .stdout
            .lines()
            .find(|l| l.contains(&format!("rank {rank} got the expected error")))
            .unwrap_or_else(|| panic!("rank {rank} reported no error:\n{}", r.stdout));
        assert!(
            line.contains("grad/layer1.weight") && line.contains("shape"),
            "{line}"
        );
    }
}
