use std::os::unix::process::ExitStatusExt;

use super::*;

/// A job of `n` ranks whose pids cannot be signalled or waited for: the tests must not touch
/// real processes.
fn fake_job(n: usize, grace: Duration) -> Job {
    let mut job = Job::new(grace);
    job.ranks = (0..n)
        .map(|_| RankProc {
            pid: u32::MAX,
            running: true,
            host: "localhost".into(),
            control: None,
        })
        .collect();
    job
}

fn code(c: i32) -> io::Result<ExitStatus> {
    Ok(ExitStatus::from_raw(c << 8))
}

fn killed_by(sig: i32) -> io::Result<ExitStatus> {
    Ok(ExitStatus::from_raw(sig))
}

#[test]
fn phases_escalate_and_healthy_jobs_have_no_deadline() {
    assert_eq!(Phase::Running.deadline(), None);
    let mut job = Job::new(Duration::from_secs(5));
    job.phase = Phase::Grace(Instant::now());
    assert!(job.on_deadline());
    assert!(matches!(job.phase, Phase::Terminating(_)));
    assert!(job.on_deadline());
    assert!(matches!(job.phase, Phase::Killed(_)));
    assert!(!job.on_deadline());
}

#[test]
fn first_failure_sets_the_exit_code_and_starts_the_grace_period() {
    let grace = Duration::from_secs(5);
    let mut job = fake_job(3, grace);
    job.on_exit(0, code(0));
    assert_eq!((job.exit, job.phase), (None, Phase::Running));
    job.on_exit(1, code(4));
    // Settling: not judged yet, and the window is short and ends before the grace period.
    let Phase::Settling { first, until } = job.phase else {
        panic!("not settling: {:?}", job.phase);
    };
    assert_eq!(job.exit, None);
    assert_eq!(until, first + SETTLE);
    // The window closes on its deadline (no rank found ended meanwhile).
    assert!(job.on_deadline());
    assert_eq!(job.exit, Some(4));
    assert_eq!(job.phase, Phase::Grace(first + grace));
    // A later failure, even a signal, does not replace the verdict.
    job.on_exit(2, killed_by(libc::SIGKILL));
    assert_eq!(job.exit, Some(4));
    assert_eq!(job.running(), 0);
}

/// What flaked in practice: a survivor's error exit is heard of just before the SIGKILL of
/// the rank that caused it; the killed rank decides the verdict and the exit code.
#[test]
fn a_kill_heard_of_while_settling_is_blamed_over_an_earlier_error_exit() {
    let mut job = fake_job(3, Duration::from_secs(5));
    job.on_exit(1, code(3));
    job.on_exit(2, killed_by(libc::SIGKILL));
    assert!(matches!(job.phase, Phase::Settling { .. }));
    assert!(job.on_deadline());
    assert_eq!(job.exit, Some(1));
    assert!(matches!(job.phase, Phase::Grace(_)));
    assert!(job.failures.is_empty());
}

#[test]
fn the_verdict_comes_at_once_when_no_rank_is_left() {
    let mut job = fake_job(2, Duration::from_secs(5));
    job.on_exit(0, code(3));
    assert!(matches!(job.phase, Phase::Settling { .. }));
    job.on_exit(1, killed_by(libc::SIGSEGV));
    assert_eq!(job.exit, Some(1));
    assert!(matches!(job.phase, Phase::Grace(_)));
}

#[test]
fn settling_never_outlasts_a_short_grace_period() {
    let mut job = fake_job(2, Duration::ZERO);
    job.on_exit(0, code(2));
    let Phase::Settling { first, until } = job.phase else {
        panic!("not settling: {:?}", job.phase);
    };
    assert_eq!(until, first);
}

#[test]
fn a_signal_while_settling_names_the_failure_first_then_wins_the_exit_code() {
    let mut job = fake_job(3, Duration::from_secs(5));
    job.on_exit(2, code(3));
    job.on_signal(libc::SIGINT);
    assert!(job.failures.is_empty());
    assert_eq!(job.exit, Some(128 + libc::SIGINT));
    assert!(matches!(job.phase, Phase::Terminating(_)));
}
