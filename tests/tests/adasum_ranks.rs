//! Adasum across real processes started by horovodrun: every float dtype against the
//! sequential reference at np 2, 3, 4 (shared memory; 3 is not a power of two) and 5 (TCP),
//! tensors in flight together, a joined rank, integer tensors refused.

use hora_tests::run_job;

fn adasum_ok(np: usize, env: &[(&str, &str)]) {
    let r = run_job(np, &["adasum"], env);
    for rank in 0..np {
        assert!(
            r.stdout.contains(&format!("rank {rank}: adasum OK")),
            "np={np} {env:?}: rank {rank} did not finish\nstdout:\n{}\nstderr:\n{}",
            r.stdout,
            r.stderr
        );
    }
    assert_eq!(r.code, Some(0), "np={np}\n{}", r.stderr);
}

#[test]
fn adasum_matches_the_reference_at_np_2_3_4_over_shared_memory() {
    for np in [2, 3, 4] {
        adasum_ok(np, &[]);
    }
}

#[test]
fn adasum_matches_the_reference_at_np_5_over_tcp() {
    adasum_ok(5, &[("HOROVOD_SHM", "0")]);
}
