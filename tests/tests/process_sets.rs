//! Process sets across real processes under horovodrun: every collective on the sets of even
//! and odd ranks at np = 2, 3, 4, a set beside the global set, each misuse answered on every
//! rank (the scenario checks the wording), and sets given at init.

use hora_tests::run_job;

fn assert_all_ok(np: usize, scenario: &str, env: &[(&str, &str)]) {
    let r = run_job(np, &[scenario], env);
    for rank in 0..np {
        assert!(
            r.stdout.contains(&format!("rank {rank}: {scenario} OK")),
            "np={np} rank {rank} did not finish {scenario}\nstdout:\n{}\nstderr:\n{}",
            r.stdout,
            r.stderr
        );
    }
    assert_eq!(r.code, Some(0), "np={np}\n{}", r.stderr);
}

#[test]
fn dynamic_sets_run_every_collective_and_refuse_misuse_at_np_2_3_4() {
    for np in [2, 3, 4] {
        assert_all_ok(np, "process-sets", &[("HOROVOD_DYNAMIC_PROCESS_SETS", "1")]);
    }
}

#[test]
fn sets_given_at_init_work_and_adding_more_is_refused() {
    for np in [3, 4] {
        assert_all_ok(np, "static-sets", &[]);
    }
}

#[test]
fn sets_over_tcp_without_shared_memory_work_too() {
    assert_all_ok(
        4,
        "process-sets",
        &[("HOROVOD_DYNAMIC_PROCESS_SETS", "1"), ("HOROVOD_SHM", "0")],
    );
}
