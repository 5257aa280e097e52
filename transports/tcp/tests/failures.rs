//! Failures are reported promptly and name the peer: refused and timed-out connections, dead
//! ranks seen by a coordinator waiting on everyone, and local aborts.

use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use hora_tcp::{MemoryDirectory, PeerDirectory, TcpConfig, TcpTransport};
use hora_transport::{Op, Tag, Transport, TransportError, deadline_after};

/// The error names `peer` as lost.
fn assert_lost(err: &TransportError, peer: usize) {
    assert!(
        matches!(err, TransportError::ConnectionLost { peer: p, .. } if *p == peer),
        "{err:?}"
    );
}

/// The error names `peer` as lost, and it came within `limit` of `start`.
fn assert_lost_within(err: &TransportError, peer: usize, start: Instant, limit: Duration) {
    assert_lost(err, peer);
    assert!(
        start.elapsed() < limit,
        "took {:?} (limit {limit:?})",
        start.elapsed()
    );
}

fn job(n: usize) -> Vec<TcpTransport> {
    let dir = MemoryDirectory::new();
    (0..n)
        .map(|r| TcpTransport::new(TcpConfig::new(r, n, b"s".to_vec()), dir.clone()).unwrap())
        .collect()
}

#[test]
fn a_refused_connection_names_the_peer() {
    let dir = MemoryDirectory::new();
    let t = TcpTransport::new(TcpConfig::new(0, 2, b"s".to_vec()), dir.clone()).unwrap();
    // A port nobody listens on any more.
    let closed: SocketAddr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    dir.publish(1, closed).unwrap();
    let start = Instant::now();
    let err = t
        .send(
            1,
            Tag::new(1, 0),
            b"x",
            deadline_after(Duration::from_secs(10)),
        )
        .unwrap_err();
    // Nothing listens at a published address only once its rank is gone.
    assert_lost(&err, 1);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_peer_that_hangs_up_during_the_handshake_is_lost() {
    let dir = MemoryDirectory::new();
    let t = TcpTransport::new(TcpConfig::new(0, 2, b"s".to_vec()), dir.clone()).unwrap();
    // Rank 1's listener takes the connection, then the process is gone.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    dir.publish(1, listener.local_addr().unwrap()).unwrap();
    let dying = thread::spawn(move || drop(listener.accept().unwrap()));
    let err = t
        .send(
            1,
            Tag::new(1, 0),
            b"x",
            deadline_after(Duration::from_secs(10)),
        )
        .unwrap_err();
    dying.join().unwrap();
    assert_lost(&err, 1);
}

/// Rank 1 of a 3-rank job is gone before anyone connected to it (its transport dropped: the
/// listener closes, as when the process dies). Returns ranks 0 and 2.
fn job_with_rank_1_dead() -> (TcpTransport, TcpTransport) {
    let mut ranks = job(3);
    let rank2 = ranks.pop().unwrap();
    drop(ranks.pop()); // rank 1
    (ranks.pop().unwrap(), rank2)
}

#[test]
fn a_wait_to_receive_from_a_rank_dead_before_first_contact_fails_fast_naming_it() {
    let (rank0, _rank2) = job_with_rank_1_dead();
    let start = Instant::now();
    let mut inbox = [0u8; 8];
    let err = rank0
        .wait(
            &mut [Op::recv(1, Tag::new(7, 0), &mut inbox)],
            deadline_after(Duration::from_secs(60)),
        )
        .unwrap_err();
    assert_lost_within(&err, 1, start, Duration::from_secs(10));
    // The loss is remembered: a send fails at once, without dialing again.
    let err = rank0.send_msg(1, Tag::new(7, 1), b"x").unwrap_err();
    assert_lost(&err, 1);
}

#[test]
fn a_recv_msg_from_a_rank_dead_before_first_contact_fails_fast_naming_it() {
    let (rank0, _rank2) = job_with_rank_1_dead();
    let start = Instant::now();
    let err = rank0
        .recv_msg(
            Some(1),
            Tag::new(7, 0),
            deadline_after(Duration::from_secs(60)),
        )
        .unwrap_err();
    assert_lost_within(&err, 1, start, Duration::from_secs(10));
}

#[test]
fn a_receiver_that_waits_long_on_a_live_silent_rank_still_gets_its_data() {
    let ranks = job(2);
    let dl = deadline_after(Duration::from_secs(30));
    thread::scope(|s| {
        let (rank0, rank1) = (&ranks[0], &ranks[1]);
        s.spawn(move || {
            // Long enough for rank 0's wait to dial us first.
            thread::sleep(Duration::from_millis(2500));
            rank1.send(0, Tag::new(8, 0), b"late", dl).unwrap();
            rank1.send_msg(0, Tag::new(8, 1), b"later").unwrap();
        });
        let mut inbox = [0u8; 4];
        rank0.recv(1, Tag::new(8, 0), &mut inbox, dl).unwrap();
        assert_eq!(&inbox, b"late");
        assert_eq!(
            rank0.recv_msg(Some(1), Tag::new(8, 1), dl).unwrap(),
            Some((1, b"later".to_vec()))
        );
    });
}

#[test]
fn connect_to_lets_a_coordinator_notice_a_rank_that_never_sent_anything() {
    let mut ranks = job(3);
    let dl = deadline_after(Duration::from_secs(20));
    for t in &ranks[1..] {
        t.connect_to(0, dl).unwrap();
        t.connect_to(0, dl).unwrap(); // idempotent
    }
    let rank2 = ranks.pop().unwrap();
    let coordinator = &ranks[0];
    thread::scope(|s| {
        s.spawn(move || {
            thread::sleep(Duration::from_millis(100));
            drop(rank2);
        });
        let start = Instant::now();
        let err = coordinator.recv_msg(None, Tag::new(9, 0), dl).unwrap_err();
        assert_lost_within(&err, 2, start, Duration::from_secs(5));
    });
    assert!(matches!(
        ranks[1].connect_to(1, dl),
        Err(TransportError::InvalidPeer { peer: 1, .. })
    ));
}

#[test]
fn a_peer_that_never_publishes_times_out_at_the_deadline() {
    let dir = MemoryDirectory::new();
    let t = TcpTransport::new(TcpConfig::new(0, 3, b"s".to_vec()), dir).unwrap();
    let start = Instant::now();
    let err = t
        .send(
            2,
            Tag::new(1, 0),
            b"x",
            deadline_after(Duration::from_millis(200)),
        )
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout { peer: Some(2), .. }),
        "{err:?}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(150) && start.elapsed() < Duration::from_secs(5)
    );
}

#[test]
fn a_coordinator_waiting_on_everyone_notices_a_dead_rank() {
    let mut ranks = job(3);
    let dl = deadline_after(Duration::from_secs(20));
    // Ranks 1 and 2 say hello, as they would when submitting their first requests.
    for (r, t) in ranks.iter().enumerate().skip(1) {
        t.send_msg(0, Tag::new(5, 0), &[r as u8]).unwrap();
    }
    for _ in 1..3 {
        ranks[0]
            .recv_msg(None, Tag::new(5, 0), dl)
            .unwrap()
            .expect("a message");
    }
    let rank2 = ranks.pop().unwrap();
    let coordinator = &ranks[0];
    thread::scope(|s| {
        s.spawn(move || {
            thread::sleep(Duration::from_millis(100));
            drop(rank2); // the process dies: its sockets close
        });
        let start = Instant::now();
        let err = coordinator.recv_msg(None, Tag::new(5, 1), dl).unwrap_err();
        assert_lost_within(&err, 2, start, Duration::from_secs(5));
    });
    // Operations with the live rank still work.
    ranks[1].send_msg(0, Tag::new(5, 2), b"still here").unwrap();
    let got = ranks[0].recv_msg(Some(1), Tag::new(5, 2), dl).unwrap();
    assert_eq!(got, Some((1, b"still here".to_vec())));
}

#[test]
fn a_message_sent_just_before_death_is_still_delivered() {
    let mut ranks = job(2);
    ranks[1].send_msg(0, Tag::new(6, 0), b"goodbye").unwrap();
    drop(ranks.pop());
    let dl = deadline_after(Duration::from_secs(10));
    assert_eq!(
        ranks[0].recv_msg(None, Tag::new(6, 0), dl).unwrap(),
        Some((1, b"goodbye".to_vec()))
    );
    let err = ranks[0].recv_msg(None, Tag::new(6, 0), dl).unwrap_err();
    assert_lost(&err, 1);
}

#[test]
fn abort_wakes_the_local_waiter_and_fails_everything_after() {
    let ranks = job(2);
    let t = &ranks[0];
    thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_millis(100));
            t.abort("operator pressed stop");
        });
        let start = Instant::now();
        let mut buf = [0u8; 4];
        let err = t
            .recv(
                1,
                Tag::new(7, 0),
                &mut buf,
                deadline_after(Duration::from_secs(20)),
            )
            .unwrap_err();
        assert!(
            matches!(&err, TransportError::Aborted { reason } if reason == "operator pressed stop"),
            "{err:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    });
    let dl = deadline_after(Duration::from_secs(1));
    assert!(matches!(
        t.send_msg(1, Tag::new(7, 1), b"x"),
        Err(TransportError::Aborted { .. })
    ));
    assert!(matches!(
        t.recv_msg(None, Tag::new(7, 1), dl),
        Err(TransportError::Aborted { .. })
    ));
    assert!(matches!(
        t.progress(&mut [Op::send(1, Tag::new(7, 1), b"x")]),
        Err(TransportError::Aborted { .. })
    ));
    // The peer cannot reach the aborted rank any more.
    let err = ranks[1].send(0, Tag::new(7, 2), b"x", dl).unwrap_err();
    assert!(err.peer() == Some(0), "{err:?}");
}

#[test]
fn a_big_send_to_a_rank_that_dies_mid_transfer_fails_fast() {
    let mut ranks = job(2);
    let dl = deadline_after(Duration::from_secs(20));
    // Connect first, then let rank 1 die while rank 0 pushes 64 MiB nobody reads.
    ranks[0].send_msg(1, Tag::new(8, 0), b"hi").unwrap();
    assert!(
        ranks[1]
            .recv_msg(Some(0), Tag::new(8, 0), dl)
            .unwrap()
            .is_some()
    );
    let rank1 = ranks.pop().unwrap();
    let big = vec![1u8; 64 << 20];
    thread::scope(|s| {
        s.spawn(move || {
            thread::sleep(Duration::from_millis(100));
            drop(rank1);
        });
        let start = Instant::now();
        let err = ranks[0].send(1, Tag::new(8, 1), &big, dl).unwrap_err();
        assert_lost_within(&err, 1, start, Duration::from_secs(5));
    });
}

#[test]
fn the_waker_does_not_disturb_data_waits_and_is_kept_for_recv_msg() {
    let ranks = job(2);
    let waker = ranks[0].waker();
    waker.wake();
    // A data wait is not interrupted by the waker...
    hora_transport::conformance::run_ranks(ranks, |rank, t| {
        let dl = deadline_after(Duration::from_secs(10));
        if rank == 1 {
            thread::sleep(Duration::from_millis(50));
            t.send(0, Tag::new(9, 0), b"data", dl).unwrap();
        } else {
            let mut buf = [0u8; 4];
            t.recv(1, Tag::new(9, 0), &mut buf, dl).unwrap();
            assert_eq!(&buf, b"data");
            // ...and the next recv_msg still sees the wake-up.
            assert_eq!(t.recv_msg(None, Tag::new(9, 1), dl).unwrap(), None);
        }
    });
}
