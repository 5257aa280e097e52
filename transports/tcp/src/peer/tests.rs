use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use hora_transport::conformance::pattern;

use super::*;

const PEER: Rank = 1;

/// A connected pair: the raw sending end, and our receiving side wrapped in a `PeerState`.
fn pair() -> (TcpStream, PeerState) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let tx = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (rx, _) = l.accept().unwrap();
    tx.set_nodelay(true).unwrap();
    let st = PeerState {
        conn: Some(Conn::new(rx, None).unwrap()),
        ..PeerState::default()
    };
    (tx, st)
}

fn frame(tag: Tag, payload: &[u8]) -> Vec<u8> {
    let mut f = Header {
        tag,
        len: payload.len(),
    }
    .encode()
    .to_vec();
    f.extend_from_slice(payload);
    f
}

/// Drives `progress` until `cond` holds (or panics after a while).
fn drive(st: &mut PeerState, ops: &mut [Op<'_>], cond: impl Fn(&[Op<'_>]) -> bool) {
    let start = Instant::now();
    while !cond(ops) {
        st.progress(PEER, ops).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no progress: {ops:?}"
        );
        std::thread::yield_now();
    }
}

fn drive_idle_until(st: &mut PeerState, cond: impl Fn(&PeerState) -> bool) {
    let start = Instant::now();
    while !cond(st) {
        st.pump_idle(PEER).unwrap();
        assert!(start.elapsed() < Duration::from_secs(10), "no progress");
        std::thread::yield_now();
    }
}

fn queued_bytes(st: &PeerState, tag: Tag) -> usize {
    st.unexpected
        .get(&tag)
        .map_or(0, |q| q.iter().map(|m| m.data.len()).sum())
}

#[test]
fn frames_split_anywhere_arrive_intact() {
    let (mut tx, mut st) = pair();
    let (a, b) = (pattern(1, 70_000), pattern(2, 5));
    let mut wire = frame(Tag(9), &a);
    wire.extend(frame(Tag(9), &b));
    let (mut ra, mut rb) = (vec![0u8; a.len()], vec![0u8; b.len()]);
    let mut ops = [
        Op::recv(PEER, Tag(9), &mut ra),
        Op::recv(PEER, Tag(9), &mut rb),
    ];
    // Odd-sized pieces cut headers and payloads at awkward places.
    for piece in wire.chunks(7919) {
        tx.write_all(piece).unwrap();
        st.progress(PEER, &mut ops).unwrap();
    }
    drive(&mut st, &mut ops, |ops| ops.iter().all(Op::is_complete));
    assert_eq!(ra, a);
    assert_eq!(rb, b);
}

#[test]
fn unexpected_messages_wait_in_order_per_tag() {
    let (mut tx, mut st) = pair();
    for i in 0..3 {
        tx.write_all(&frame(Tag(1), &pattern(i, 100 + i))).unwrap();
    }
    tx.write_all(&frame(Tag(2), &pattern(7, 0))).unwrap();
    drive_idle_until(&mut st, |st| {
        st.unexpected.get(&Tag(2)).is_some_and(|q| !q.is_empty())
    });
    let mut empty = [0u8; 0];
    let mut ops = [Op::recv(PEER, Tag(2), &mut empty)];
    st.progress(PEER, &mut ops).unwrap();
    assert!(
        ops[0].is_complete(),
        "a queued zero-length message completes its receive"
    );
    for i in 0..3 {
        let mut buf = vec![0u8; 100 + i];
        let mut ops = [Op::recv(PEER, Tag(1), &mut buf)];
        st.progress(PEER, &mut ops).unwrap();
        assert!(ops[0].is_complete());
        assert_eq!(buf, pattern(i, 100 + i), "message {i} out of order");
    }
}

#[test]
fn an_op_that_leaves_and_returns_gets_every_byte() {
    let (mut tx, mut st) = pair();
    let msg = pattern(3, 1 << 20);
    let wire = frame(Tag(5), &msg);
    let mut buf = vec![0u8; msg.len()];
    let mut ops = [Op::recv(PEER, Tag(5), &mut buf)];
    tx.write_all(&wire[..HEADER_LEN + 100_000]).unwrap();
    drive(&mut st, &mut ops, |ops| ops[0].done() == 100_000);
    // A call without the op (recv_msg, or other ops) spills the rest into the queue...
    tx.write_all(&wire[HEADER_LEN + 100_000..HEADER_LEN + 600_000])
        .unwrap();
    drive_idle_until(&mut st, |st| queued_bytes(st, Tag(5)) == 500_000);
    tx.write_all(&wire[HEADER_LEN + 600_000..]).unwrap();
    // ...and the op, back again, picks the spilled bytes up and takes the rest directly.
    drive(&mut st, &mut ops, |ops| ops[0].is_complete());
    assert_eq!(buf, msg);
    assert_eq!(queued_bytes(&st, Tag(5)), 0);
}

#[test]
fn a_different_receive_cannot_take_a_half_delivered_message() {
    let (mut tx, mut st) = pair();
    let msg = pattern(4, 300_000);
    let wire = frame(Tag(6), &msg);
    let mut first = vec![0u8; msg.len()];
    let mut ops = [Op::recv(PEER, Tag(6), &mut first)];
    tx.write_all(&wire[..HEADER_LEN + 1000]).unwrap();
    drive(&mut st, &mut ops, |ops| ops[0].done() == 1000);
    tx.write_all(&wire[HEADER_LEN + 1000..]).unwrap();
    tx.write_all(&frame(Tag(6), &pattern(5, 10))).unwrap();
    drive_idle_until(&mut st, |st| {
        st.unexpected
            .get(&Tag(6))
            .is_some_and(|q| q.len() == 2 && q[1].complete)
    });
    let mut second = vec![0u8; msg.len()];
    let err = st
        .progress(PEER, &mut [Op::recv(PEER, Tag(6), &mut second)])
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::Protocol { peer: PEER, detail } if detail.contains("abandoned")),
        "{err:?}"
    );
    // The stream stays usable: the next message is intact.
    let mut next = vec![0u8; 10];
    let mut ops = [Op::recv(PEER, Tag(6), &mut next)];
    st.progress(PEER, &mut ops).unwrap();
    assert!(ops[0].is_complete());
    assert_eq!(next, pattern(5, 10));
}

#[test]
fn a_receive_posted_mid_message_takes_over_the_stream() {
    let (mut tx, mut st) = pair();
    let msg = pattern(6, 2 << 20);
    let wire = frame(Tag(7), &msg);
    tx.write_all(&wire[..HEADER_LEN + 50_000]).unwrap();
    drive_idle_until(&mut st, |st| queued_bytes(st, Tag(7)) == 50_000);
    let mut buf = vec![0u8; msg.len()];
    let mut ops = [Op::recv(PEER, Tag(7), &mut buf)];
    st.progress(PEER, &mut ops).unwrap();
    assert_eq!(ops[0].done(), 50_000, "the queued prefix is handed over");
    assert!(
        st.unexpected.get(&Tag(7)).is_none_or(VecDeque::is_empty),
        "the entry left the queue"
    );
    tx.write_all(&wire[HEADER_LEN + 50_000..]).unwrap();
    drive(&mut st, &mut ops, |ops| ops[0].is_complete());
    assert_eq!(buf, msg);
    assert_eq!(
        queued_bytes(&st, Tag(7)),
        0,
        "the rest went straight to the op"
    );
}

#[test]
fn a_wrong_length_fails_its_receive_and_is_skipped() {
    let (mut tx, mut st) = pair();
    tx.write_all(&frame(Tag(8), &pattern(1, 40_000))).unwrap();
    tx.write_all(&frame(Tag(8), &pattern(2, 8))).unwrap();
    let mut small = [0u8; 8];
    let start = Instant::now();
    let err = loop {
        match st.progress(PEER, &mut [Op::recv(PEER, Tag(8), &mut small)]) {
            Err(e) => break e,
            Ok(()) => assert!(start.elapsed() < Duration::from_secs(10)),
        }
    };
    assert!(
        matches!(err, TransportError::Protocol { peer: PEER, .. }),
        "{err:?}"
    );
    let mut ops = [Op::recv(PEER, Tag(8), &mut small)];
    drive(&mut st, &mut ops, |ops| ops[0].is_complete());
    assert_eq!(small.to_vec(), pattern(2, 8));
}

#[test]
fn end_of_stream_delivers_what_arrived_then_reports_the_loss() {
    let (mut tx, mut st) = pair();
    tx.write_all(&frame(Tag(1), b"last words")).unwrap();
    tx.write_all(
        &Header {
            tag: Tag(2),
            len: 100,
        }
        .encode(),
    )
    .unwrap();
    tx.write_all(&[0u8; 10]).unwrap();
    drop(tx);
    drive_idle_until(&mut st, |st| st.lost.is_some());
    assert_eq!(
        st.take_message(PEER, Tag(1)).unwrap().as_deref(),
        Some(&b"last words"[..])
    );
    let mut buf = [0u8; 100];
    let err = st
        .progress(PEER, &mut [Op::recv(PEER, Tag(2), &mut buf)])
        .unwrap_err();
    assert!(
        matches!(err, TransportError::ConnectionLost { peer: PEER, .. }),
        "{err:?}"
    );
}

#[test]
fn a_send_that_finds_the_peer_gone_still_delivers_its_last_words() {
    let (mut tx, mut st) = pair();
    tx.write_all(&frame(Tag(3), b"why I stopped")).unwrap();
    drop(tx);
    // Sending into the closed socket fails (EPIPE or a reset) before anything read it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while st.send_message(PEER, Tag(1), &[0u8; 4096]).is_ok() {
        assert!(std::time::Instant::now() < deadline, "sends never failed");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(st.lost.is_some());
    assert_eq!(
        st.take_message(PEER, Tag(3)).unwrap().as_deref(),
        Some(&b"why I stopped"[..])
    );
}

#[test]
fn abandoning_a_half_sent_frame_breaks_the_connection_not_the_stream() {
    let (tx, mut rx) = pair();
    let mut st = PeerState {
        conn: Some(Conn::new(tx, None).unwrap()),
        ..PeerState::default()
    };
    // Nobody reads, so a large send stops part-way once the socket buffers fill.
    let big = vec![7u8; 64 << 20];
    let mut ops = [Op::send(PEER, Tag(1), &big)];
    st.progress(PEER, &mut ops).unwrap();
    assert!(ops[0].is_started() && !ops[0].is_complete());
    // Another call without that op but with a send of its own must not start a new frame.
    let err = st
        .progress(PEER, &mut [Op::send(PEER, Tag(2), b"x")])
        .unwrap_err();
    assert!(
        matches!(err, TransportError::ConnectionLost { peer: PEER, .. }),
        "{err:?}"
    );
    assert!(st.lost.is_some());
    drop(rx.conn.take());
}

#[test]
fn send_message_queues_what_the_kernel_does_not_take() {
    let (tx, mut rx) = pair();
    let mut st = PeerState {
        conn: Some(Conn::new(tx, None).unwrap()),
        ..PeerState::default()
    };
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let msgs: Vec<Vec<u8>> = (0..4).map(|i| pattern(i, 3 << 20)).collect();
    for m in &msgs {
        st.send_message(PEER, Tag(3), m).unwrap();
    }
    st.sync_backlog(&counter);
    assert_eq!(
        counter.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "12 MiB cannot all fit in the kernel"
    );
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < msgs.len() {
        st.flush(PEER).unwrap();
        rx.pump_idle(PEER).unwrap();
        while let Some(m) = rx.take_message(PEER, Tag(3)).unwrap() {
            got.push(m);
        }
        assert!(start.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(got, msgs);
    st.sync_backlog(&counter);
    assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 0);
}
