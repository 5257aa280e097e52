//! The one test table every transport must pass.
//!
//! Each check takes a factory that builds the ranks of a fresh job (all in this process, one
//! thread per rank) and runs the same scenario on it. A transport crate runs the whole table
//! with `hora_transport::conformance_suite!(|n| make_job(n));` in its `tests/conformance.rs`.
//!
//! Each check is also written against a [`Harness`], which runs the ranks of a job wherever
//! they live: [`Threads`] runs them as threads of this process (what the suite uses), and a
//! transport whose ranks must be separate processes (MPI under `mpirun`) runs each check in
//! every process through [`CHECKS`], each process playing its own rank.

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use crate::{Op, Tag, Transport, TransportError, deadline_after};

/// Builds the ranks of a fresh job of the given size.
pub trait Factory<T>: Fn(usize) -> Vec<T> + Sync {}
impl<T, F: Fn(usize) -> Vec<T> + Sync> Factory<T> for F {}

const LONG: Duration = Duration::from_secs(60);

/// The body of a check for one rank: `(rank, transport, barrier)`; `barrier()` returns once
/// every rank of the job has called it.
pub type RankFn<'a, T> = &'a (dyn Fn(usize, &T, &dyn Fn()) + Sync);

/// Runs the ranks of the jobs a check needs.
pub trait Harness<T: Transport>: Sync {
    /// Builds a fresh job of `n` ranks and runs `f` on each of its ranks that lives in this
    /// process, returning when they have all finished. A harness that cannot host `n` ranks
    /// (fewer processes were started) runs nothing and returns.
    fn run(&self, n: usize, f: RankFn<'_, T>);
}

/// Every rank a thread of this process, the job built by a [`Factory`].
#[derive(Debug)]
pub struct Threads<'a, F>(pub &'a F);

impl<T: Transport, F: Factory<T>> Harness<T> for Threads<'_, F> {
    fn run(&self, n: usize, f: RankFn<'_, T>) {
        let barrier = Barrier::new(n);
        run_ranks((self.0)(n), |rank, t| {
            f(rank, t, &|| {
                barrier.wait();
            })
        });
    }
}

/// A check of the table, run on any harness.
pub type Check<T> = fn(&dyn Harness<T>);

/// The whole table, by name, for harnesses that drive the checks themselves.
pub fn checks<T: Transport>() -> Vec<(&'static str, Check<T>)> {
    vec![
        ("ping_pong", ping_pong_on::<T>),
        ("full_duplex_ring", full_duplex_ring_on::<T>),
        ("tag_matching", tag_matching_on::<T>),
        ("messages_from_any", messages_from_any_on::<T>),
        ("waker_interrupts", waker_interrupts_on::<T>),
        ("receive_times_out", receive_times_out_on::<T>),
        (
            "length_mismatch_is_an_error",
            length_mismatch_is_an_error_on::<T>,
        ),
        ("invalid_peer_is_refused", invalid_peer_is_refused_on::<T>),
        ("peer_abort_fails_waiters", peer_abort_fails_waiters_on::<T>),
    ]
}

/// The names of [`checks`], in order.
pub const CHECKS: &[&str] = &[
    "ping_pong",
    "full_duplex_ring",
    "tag_matching",
    "messages_from_any",
    "waker_interrupts",
    "receive_times_out",
    "length_mismatch_is_an_error",
    "invalid_peer_is_refused",
    "peer_abort_fails_waiters",
];

/// Deterministic, rank- and index-dependent test bytes.
pub fn pattern(seed: usize, len: usize) -> Vec<u8> {
    let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs `f(rank, transport)` on one thread per rank and returns the results in rank order,
/// propagating any panic.
pub fn run_ranks<T, R, F>(ranks: Vec<T>, f: F) -> Vec<R>
where
    T: Transport,
    R: Send,
    F: Fn(usize, &T) -> R + Sync,
{
    thread::scope(|s| {
        let handles: Vec<_> = ranks
            .iter()
            .enumerate()
            .map(|(r, t)| {
                let f = &f;
                s.spawn(move || f(r, t))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread panicked"))
            .collect()
    })
}

/// Point-to-point messages of awkward sizes arrive intact.
pub fn ping_pong<T: Transport>(factory: &impl Factory<T>) {
    ping_pong_on(&Threads(factory));
}

/// [`ping_pong`] on any harness.
pub fn ping_pong_on<T: Transport>(h: &dyn Harness<T>) {
    for &len in &[0usize, 1, 7, 4093, 1 << 20, (16 << 20) + 3] {
        h.run(2, &|rank, t, _| {
            let tag = Tag::new(1, len as u64);
            let dl = deadline_after(LONG);
            if rank == 0 {
                let data = pattern(len, len);
                t.send(1, tag, &data, dl).unwrap();
                let mut back = vec![0u8; len];
                t.recv(1, tag, &mut back, dl).unwrap();
                assert_eq!(back, data, "echo of {len} bytes differs");
            } else {
                let mut buf = vec![0u8; len];
                t.recv(0, tag, &mut buf, dl).unwrap();
                t.send(0, tag, &buf, dl).unwrap();
            }
        });
    }
}

/// Every rank sends a large buffer right while receiving one from the left, in one wait: this
/// deadlocks unless the transport moves both directions at once.
pub fn full_duplex_ring<T: Transport>(factory: &impl Factory<T>) {
    full_duplex_ring_on(&Threads(factory));
}

/// [`full_duplex_ring`] on any harness.
pub fn full_duplex_ring_on<T: Transport>(h: &dyn Harness<T>) {
    for n in 2..=5 {
        let len = 8 << 20;
        h.run(n, &|rank, t, _| {
            let right = (rank + 1) % n;
            let left = (rank + n - 1) % n;
            let out = pattern(rank, len);
            let mut inbox = vec![0u8; len];
            let tag = Tag::new(2, 0);
            t.wait(
                &mut [Op::send(right, tag, &out), Op::recv(left, tag, &mut inbox)],
                deadline_after(LONG),
            )
            .unwrap();
            assert_eq!(
                inbox,
                pattern(left, len),
                "rank {rank} got a corrupt ring message"
            );
        });
    }
}

/// Messages with different tags are matched by tag, whatever order they arrive in; messages with
/// the same tag arrive in send order.
pub fn tag_matching<T: Transport>(factory: &impl Factory<T>) {
    tag_matching_on(&Threads(factory));
}

/// [`tag_matching`] on any harness.
pub fn tag_matching_on<T: Transport>(h: &dyn Harness<T>) {
    h.run(2, &|rank, t, _| {
        let dl = deadline_after(LONG);
        let (a, b) = (Tag::new(3, 1), Tag::new(3, 2));
        if rank == 0 {
            t.send(1, a, &pattern(1, 1000), dl).unwrap();
            t.send(1, b, &pattern(2, 2000), dl).unwrap();
            for i in 0..20 {
                t.send(1, Tag::new(4, 0), &pattern(100 + i, 64), dl)
                    .unwrap();
            }
        } else {
            let mut bb = vec![0u8; 2000];
            t.recv(0, b, &mut bb, dl).unwrap();
            let mut aa = vec![0u8; 1000];
            t.recv(0, a, &mut aa, dl).unwrap();
            assert_eq!(aa, pattern(1, 1000));
            assert_eq!(bb, pattern(2, 2000));
            for i in 0..20 {
                let mut m = vec![0u8; 64];
                t.recv(0, Tag::new(4, 0), &mut m, dl).unwrap();
                assert_eq!(m, pattern(100 + i, 64), "same-tag message {i} out of order");
            }
        }
    });
}

/// Variable-length control messages from any rank reach the receiver, each exactly once.
pub fn messages_from_any<T: Transport>(factory: &impl Factory<T>) {
    messages_from_any_on(&Threads(factory));
}

/// [`messages_from_any`] on any harness.
pub fn messages_from_any_on<T: Transport>(h: &dyn Harness<T>) {
    let n = 4;
    h.run(n, &|rank, t, _| {
        let tag = Tag::new(5, 0);
        let dl = deadline_after(LONG);
        if rank == 0 {
            let mut seen = vec![0usize; n];
            for _ in 0..(n - 1) * 3 {
                let (from, msg) = t.recv_msg(None, tag, dl).unwrap().expect("not woken");
                assert_eq!(
                    msg,
                    pattern(from * 10 + seen[from], from * 100 + seen[from])
                );
                seen[from] += 1;
            }
            assert_eq!(&seen[1..], &[3, 3, 3]);
        } else {
            for i in 0..3 {
                t.send_msg(0, tag, &pattern(rank * 10 + i, rank * 100 + i))
                    .unwrap();
            }
        }
    });
}

/// A waker interrupts a blocked `recv_msg`, which then returns `Ok(None)`.
pub fn waker_interrupts<T: Transport>(factory: &impl Factory<T>) {
    waker_interrupts_on(&Threads(factory));
}

/// [`waker_interrupts`] on any harness.
pub fn waker_interrupts_on<T: Transport>(h: &dyn Harness<T>) {
    h.run(2, &|rank, t, _| {
        if rank != 0 {
            return;
        }
        let waker = t.waker();
        thread::scope(|s| {
            s.spawn(move || {
                thread::sleep(Duration::from_millis(50));
                waker.wake();
            });
            let start = Instant::now();
            let got = t.recv_msg(
                None,
                Tag::new(6, 0),
                deadline_after(Duration::from_secs(20)),
            );
            assert!(matches!(got, Ok(None)), "expected a wake-up, got {got:?}");
            assert!(start.elapsed() < Duration::from_secs(10));
        });
    });
}

/// A receive with no sender fails with `Timeout` at its deadline, naming the peer.
pub fn receive_times_out<T: Transport>(factory: &impl Factory<T>) {
    receive_times_out_on(&Threads(factory));
}

/// [`receive_times_out`] on any harness.
pub fn receive_times_out_on<T: Transport>(h: &dyn Harness<T>) {
    h.run(2, &|rank, t, barrier| {
        if rank == 0 {
            let mut buf = [0u8; 8];
            let start = Instant::now();
            let err = t
                .recv(
                    1,
                    Tag::new(7, 0),
                    &mut buf,
                    deadline_after(Duration::from_millis(200)),
                )
                .unwrap_err();
            assert!(
                matches!(err, TransportError::Timeout { peer: Some(1), .. }),
                "expected a timeout naming rank 1, got {err:?}"
            );
            assert!(start.elapsed() >= Duration::from_millis(150));
        }
        barrier();
    });
}

/// A message of the wrong length is a protocol error, not silent truncation.
pub fn length_mismatch_is_an_error<T: Transport>(factory: &impl Factory<T>) {
    length_mismatch_is_an_error_on(&Threads(factory));
}

/// [`length_mismatch_is_an_error`] on any harness.
pub fn length_mismatch_is_an_error_on<T: Transport>(h: &dyn Harness<T>) {
    h.run(2, &|rank, t, _| {
        let dl = deadline_after(LONG);
        if rank == 0 {
            t.send(1, Tag::new(8, 0), &[1, 2, 3, 4, 5], dl).unwrap();
        } else {
            let mut buf = [0u8; 4];
            let err = t.recv(0, Tag::new(8, 0), &mut buf, dl).unwrap_err();
            assert!(
                matches!(err, TransportError::Protocol { peer: 0, .. }),
                "got {err:?}"
            );
        }
    });
}

/// Naming this rank or a rank outside the job is refused.
pub fn invalid_peer_is_refused<T: Transport>(factory: &impl Factory<T>) {
    invalid_peer_is_refused_on(&Threads(factory));
}

/// [`invalid_peer_is_refused`] on any harness.
pub fn invalid_peer_is_refused_on<T: Transport>(h: &dyn Harness<T>) {
    h.run(2, &|rank, t, _| {
        if rank != 0 {
            return;
        }
        let dl = deadline_after(Duration::from_secs(5));
        let err = t.send(7, Tag::new(9, 0), &[1], dl).unwrap_err();
        assert!(
            matches!(err, TransportError::InvalidPeer { peer: 7, .. }),
            "got {err:?}"
        );
        let err = t.send(0, Tag::new(9, 0), &[1], dl).unwrap_err();
        assert!(
            matches!(err, TransportError::InvalidPeer { peer: 0, .. }),
            "got {err:?}"
        );
    });
}

/// When one rank aborts, a peer waiting on it fails promptly instead of hanging.
pub fn peer_abort_fails_waiters<T: Transport>(factory: &impl Factory<T>) {
    peer_abort_fails_waiters_on(&Threads(factory));
}

/// [`peer_abort_fails_waiters`] on any harness.
pub fn peer_abort_fails_waiters_on<T: Transport>(h: &dyn Harness<T>) {
    h.run(3, &|rank, t, barrier| {
        // Make sure connections exist before the failure, as in a running job.
        let dl = deadline_after(LONG);
        let right = (rank + 1) % 3;
        let left = (rank + 2) % 3;
        let mut b = [0u8; 16];
        t.wait(
            &mut [
                Op::send(right, Tag::new(10, 0), &[rank as u8; 16]),
                Op::recv(left, Tag::new(10, 0), &mut b),
            ],
            dl,
        )
        .unwrap();
        barrier();
        match rank {
            2 => {
                thread::sleep(Duration::from_millis(100));
                t.abort("test kills rank 2");
                let err = t.send(0, Tag::new(10, 1), &[0], dl).unwrap_err();
                assert!(matches!(err, TransportError::Aborted { .. }), "got {err:?}");
            }
            1 => {
                let start = Instant::now();
                let mut buf = [0u8; 4];
                let err = t.recv(2, Tag::new(10, 1), &mut buf, dl).unwrap_err();
                assert!(
                    err.peer() == Some(2) || matches!(err, TransportError::Aborted { .. }),
                    "got {err:?}"
                );
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "failure took {:?}",
                    start.elapsed()
                );
            }
            _ => {}
        }
    });
}

/// Expands to one `#[test]` per check, each building its jobs with `$factory`.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr) => {
        $crate::conformance_suite!(@tests $factory;
            ping_pong, full_duplex_ring, tag_matching, messages_from_any, waker_interrupts,
            receive_times_out, length_mismatch_is_an_error, invalid_peer_is_refused,
            peer_abort_fails_waiters);
    };
    (@tests $factory:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                $crate::conformance::$name(&$factory);
            }
        )*
    };
}
