use std::os::unix::process::ExitStatusExt;

use super::*;

#[test]
fn exit_statuses_are_described_with_codes() {
    assert_eq!(
        describe(ExitStatus::from_raw(3 << 8)),
        ("exited with code 3".to_owned(), 3)
    );
    assert_eq!(
        describe(ExitStatus::from_raw(libc::SIGKILL)),
        ("was killed by signal 9 (SIGKILL)".to_owned(), 1)
    );
    assert_eq!(
        describe(ExitStatus::from_raw(libc::SIGSEGV | 0x80)),
        (
            "was killed by signal 11 (SIGSEGV, core dumped)".to_owned(),
            1
        )
    );
}

#[test]
fn phases_escalate_and_healthy_jobs_have_no_deadline() {
    assert_eq!(Phase::Running.deadline(), None);
    let mut job = Job {
        ranks: Vec::new(),
        pumps: Vec::new(),
        phase: Phase::Running,
        exit: None,
    };
    job.phase = Phase::Grace(Instant::now());
    assert!(job.on_deadline());
    assert!(matches!(job.phase, Phase::Terminating(_)));
    assert!(job.on_deadline());
    assert!(matches!(job.phase, Phase::Killed(_)));
    assert!(!job.on_deadline());
}

#[test]
fn first_failure_sets_the_exit_code_and_starts_the_grace_period() {
    let mut job = Job {
        // Pids that cannot be signalled: the test must not touch real processes.
        ranks: (0..3)
            .map(|_| RankProc {
                pid: u32::MAX,
                running: true,
                host: "localhost".into(),
                control: None,
            })
            .collect(),
        pumps: Vec::new(),
        phase: Phase::Running,
        exit: None,
    };
    job.on_exit(0, Ok(ExitStatus::from_raw(0)), Duration::from_secs(5));
    assert_eq!((job.exit, job.phase), (None, Phase::Running));
    job.on_exit(1, Ok(ExitStatus::from_raw(4 << 8)), Duration::from_secs(5));
    assert_eq!(job.exit, Some(4));
    assert!(matches!(job.phase, Phase::Grace(_)));
    // A later failure does not replace the first.
    job.on_exit(2, Ok(ExitStatus::from_raw(9)), Duration::from_secs(5));
    assert_eq!(job.exit, Some(4));
    assert_eq!(job.running(), 0);
}
