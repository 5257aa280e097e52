//! Two ranks that dial each other at the same moment end up sharing exactly one connection.

use std::collections::HashSet;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hora_tcp::{MemoryDirectory, TcpConfig, TcpTransport};
use hora_transport::conformance::{pattern, run_ranks};
use hora_transport::{Op, Tag, Transport, deadline_after};

fn job(n: usize) -> Vec<TcpTransport> {
    let dir = MemoryDirectory::new();
    (0..n)
        .map(|r| TcpTransport::new(TcpConfig::new(r, n, b"s".to_vec()), dir.clone()).unwrap())
        .collect()
}

/// Established loopback TCP sockets (either end) whose local or remote port is in `ports`.
fn established_touching(ports: &HashSet<u16>) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let port =
                |col: &str| u16::from_str_radix(col.rsplit(':').next().unwrap_or(""), 16).ok();
            cols.len() > 3
                && cols[3] == "01"
                && (port(cols[1]).is_some_and(|p| ports.contains(&p))
                    || port(cols[2]).is_some_and(|p| ports.contains(&p)))
        })
        .count()
}

#[test]
fn simultaneous_first_contact_leaves_one_connection_with_correct_data() {
    for round in 0..40 {
        let barrier = Barrier::new(2);
        run_ranks(job(2), |rank, t| {
            let peer = 1 - rank;
            let dl = deadline_after(Duration::from_secs(20));
            barrier.wait();
            // Both ranks send first, so both dial at once.
            for i in 0..3u64 {
                let out = pattern(rank * 1000 + i as usize, 100_000);
                let mut inbox = vec![0u8; 100_000];
                let tag = Tag::new(1, i);
                t.wait(
                    &mut [Op::send(peer, tag, &out), Op::recv(peer, tag, &mut inbox)],
                    dl,
                )
                .unwrap();
                assert_eq!(
                    inbox,
                    pattern(peer * 1000 + i as usize, 100_000),
                    "round {round} message {i}"
                );
            }
        });
    }
}

#[test]
fn the_losing_dial_is_closed() {
    for round in 0..20 {
        let ranks = job(2);
        let ports: HashSet<u16> = ranks.iter().map(|t| t.local_addr().port()).collect();
        let barrier = Barrier::new(2);
        std::thread::scope(|s| {
            for (rank, t) in ranks.iter().enumerate() {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    t.send_msg(1 - rank, Tag::new(2, 0), b"hello").unwrap();
                    let (from, msg) = t
                        .recv_msg(
                            Some(1 - rank),
                            Tag::new(2, 0),
                            deadline_after(Duration::from_secs(20)),
                        )
                        .unwrap()
                        .expect("not woken");
                    assert_eq!((from, msg.as_slice()), (1 - rank, &b"hello"[..]));
                });
            }
        });
        // Both ends of the one surviving connection, and nothing else, stay established.
        let start = Instant::now();
        let mut count = established_touching(&ports);
        while count != 2 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
            count = established_touching(&ports);
        }
        assert_eq!(
            count, 2,
            "round {round}: {count} established sockets between the two ranks"
        );
    }
}
