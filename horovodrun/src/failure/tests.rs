use std::time::Duration;

use super::*;

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

fn failure(rank: u32, outcome: Outcome, at: Instant) -> Failure {
    Failure {
        rank,
        who: format!("rank {rank} (pid {})", 100 + rank),
        outcome,
        at,
    }
}

const KILLED: Outcome = Outcome::Signaled {
    signal: libc::SIGKILL,
    core_dumped: false,
};

#[test]
fn statuses_become_outcomes_and_are_described_with_codes() {
    let exited = Outcome::from_status(ExitStatus::from_raw(3 << 8), None).unwrap();
    assert_eq!(exited, Outcome::Exited(3));
    assert_eq!(
        (exited.describe(), exited.exit_code()),
        ("exited with code 3".to_owned(), 3)
    );
    let killed = Outcome::from_status(ExitStatus::from_raw(libc::SIGKILL), None).unwrap();
    assert_eq!(
        (killed.describe(), killed.exit_code()),
        ("was killed by signal 9 (SIGKILL)".to_owned(), 1)
    );
    let segv = Outcome::from_status(ExitStatus::from_raw(libc::SIGSEGV | 0x80), None).unwrap();
    assert_eq!(
        (segv.describe(), segv.exit_code()),
        (
            "was killed by signal 11 (SIGSEGV, core dumped)".to_owned(),
            1
        )
    );
    assert_eq!(Outcome::from_status(ExitStatus::from_raw(0), None), None);
}

#[test]
fn ssh_status_is_a_lost_host_only_for_remote_ranks() {
    let status = ExitStatus::from_raw(SSH_FAILED << 8);
    let lost = Outcome::from_status(status, Some("node2")).unwrap();
    assert_eq!(
        lost,
        Outcome::LostHost {
            host: "node2".into()
        }
    );
    assert!(
        lost.describe()
            .starts_with("lost its ssh connection to host node2")
    );
    assert_eq!(lost.exit_code(), 1);
    assert_eq!(
        Outcome::from_status(status, None),
        Some(Outcome::Exited(SSH_FAILED))
    );
}

/// The race seen in practice: rank 2 is SIGKILLed, rank 1 notices within milliseconds and
/// exits with an error, and the launcher hears of rank 1 first. Rank 2 must be blamed.
#[test]
fn a_killed_rank_is_blamed_before_a_survivor_heard_of_earlier() {
    let t0 = Instant::now();
    let v = verdict(
        vec![
            failure(1, Outcome::Exited(3), at(t0, 0)),
            failure(2, KILLED, at(t0, 4)),
        ],
        1,
    )
    .unwrap();
    assert_eq!((v.culprit, v.exit_code), (2, 1));
    assert_eq!(
        v.lines,
        [
            "horovodrun: rank 2 (pid 102) was killed by signal 9 (SIGKILL); stopping the other 1 rank",
            "horovodrun: also: rank 1 (pid 101) exited with code 3",
        ]
    );
}

#[test]
fn among_equals_the_earliest_is_blamed_and_others_follow_by_suspicion() {
    let t0 = Instant::now();
    let mut f = vec![
        failure(
            0,
            Outcome::Unknown("could not be waited for".into()),
            at(t0, 0),
        ),
        failure(3, Outcome::Exited(3), at(t0, 5)),
        failure(1, Outcome::Exited(4), at(t0, 2)),
        failure(5, KILLED, at(t0, 9)),
        failure(
            4,
            Outcome::LostHost {
                host: "node2".into(),
            },
            at(t0, 7),
        ),
        // Heard of at the same moment as rank 3: the lower rank goes first, whatever the input order.
        failure(2, Outcome::Exited(5), at(t0, 5)),
    ];
    most_likely_first(&mut f);
    assert_eq!(
        f.iter().map(|f| f.rank).collect::<Vec<_>>(),
        [4, 5, 1, 2, 3, 0]
    );
    let v = verdict(f, 0).unwrap();
    assert_eq!((v.culprit, v.exit_code), (4, 1));
    // Nobody left to stop: the culprit's line says nothing about stopping.
    assert!(v.lines[0].ends_with("(ssh exited with 255: host down, network cut or ssh refused)"));
    assert_eq!(v.lines.len(), 6);
}

#[test]
fn an_error_exit_alone_decides_the_exit_code() {
    let t0 = Instant::now();
    let v = verdict(
        vec![
            failure(2, Outcome::Exited(7), at(t0, 3)),
            failure(1, Outcome::Exited(3), at(t0, 1)),
        ],
        2,
    )
    .unwrap();
    assert_eq!((v.culprit, v.exit_code), (1, 3));
    assert_eq!(
        v.lines,
        [
            "horovodrun: rank 1 (pid 101) exited with code 3; stopping the other 2 ranks",
            "horovodrun: also: rank 2 (pid 102) exited with code 7",
        ]
    );
}

#[test]
fn many_echoes_are_summed_up() {
    let t0 = Instant::now();
    let mut f: Vec<_> = (0..20)
        .map(|r| failure(r, Outcome::Exited(3), at(t0, 1 + u64::from(r))))
        .collect();
    f.push(failure(20, KILLED, at(t0, 50)));
    let v = verdict(f, 0).unwrap();
    assert_eq!(v.culprit, 20);
    assert_eq!(v.lines.len(), 1 + MAX_ALSO + 1);
    assert_eq!(
        v.lines.last().unwrap(),
        "horovodrun: also: 12 more ranks failed at the same time (--verbose lists them)"
    );
}

#[test]
fn no_failure_no_verdict() {
    assert_eq!(verdict(Vec::new(), 3), None);
}
