//! Thread-level tests: every rank is a thread of this process, with its own group.

use std::time::{Duration, Instant};

use hora_transport::{CollectiveError, DataType, ReduceOp, TransportError, deadline_after};

use crate::allreduce::parts;
use crate::{ShmConfig, ShmGroup, unique_job_name};

fn job(n: usize, slice: usize, depth: usize) -> Vec<ShmGroup> {
    let name = unique_job_name("hora-shm-test");
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|r| {
                let name = name.clone();
                s.spawn(move || {
                    let mut c = ShmConfig::new(r, n, name);
                    c.slice_bytes = slice;
                    c.depth = depth;
                    c.connect_timeout = Duration::from_secs(20);
                    ShmGroup::connect(&c).expect("connect")
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn sum_u32(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
        let v = u32::from_le_bytes(d.try_into().unwrap())
            .wrapping_add(u32::from_le_bytes(s.try_into().unwrap()));
        d.copy_from_slice(&v.to_le_bytes());
    }
}

fn input(rank: usize, call: usize, elems: usize) -> Vec<u8> {
    (0..elems)
        .flat_map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761) ^ (rank * 1000 + call) as u32).to_le_bytes()
        })
        .collect()
}

fn expected(n: usize, call: usize, elems: usize) -> Vec<u8> {
    let mut acc = vec![0u8; elems * 4];
    for r in 0..n {
        sum_u32(&mut acc, &input(r, call, elems));
    }
    acc
}

#[test]
fn parts_cover_the_block_exactly() {
    for &(len, elem, n) in &[(0, 4, 3), (4, 4, 3), (36, 4, 3), (100, 2, 7), (4096, 8, 4)] {
        let ps: Vec<_> = parts(len, elem, n).collect();
        assert_eq!(ps.len(), n);
        let mut at = 0;
        for (s, l) in ps {
            assert_eq!(s, at);
            assert_eq!(l % elem, 0);
            at += l;
        }
        assert_eq!(at, len / elem * elem);
    }
}

#[test]
fn allreduce_sums_for_every_size_and_rank_count() {
    for n in 1..=4 {
        // Tiny slices and depth 2 force many steps and slot reuse within and across calls.
        let groups = job(n, 256, 2);
        let sizes = [0usize, 1, 3, 63, 64, 65, 1000, 12_345];
        std::thread::scope(|s| {
            for g in &groups {
                s.spawn(move || {
                    for (call, &elems) in sizes.iter().enumerate() {
                        let mut buf = input(g.rank(), call, elems);
                        g.allreduce(
                            &mut buf,
                            DataType::I32,
                            ReduceOp::Sum,
                            deadline_after(Duration::from_secs(30)),
                        )
                        .unwrap();
                        assert_eq!(buf, expected(n, call, elems), "n={n} elems={elems}");
                    }
                });
            }
        });
    }
}

#[test]
fn many_back_to_back_calls_with_default_slices() {
    let n = 3;
    let groups = job(n, 128 << 10, 4);
    std::thread::scope(|s| {
        for g in &groups {
            s.spawn(move || {
                for call in 0..40 {
                    let elems = [1024, 300_000, 7][call % 3];
                    let mut buf = input(g.rank(), call, elems);
                    g.allreduce(
                        &mut buf,
                        DataType::I32,
                        ReduceOp::Sum,
                        deadline_after(Duration::from_secs(30)),
                    )
                    .unwrap();
                    assert_eq!(buf, expected(n, call, elems));
                }
            });
        }
    });
}

#[test]
fn a_missing_peer_is_a_timeout_naming_it() {
    let groups = job(2, 4096, 2);
    let start = Instant::now();
    let mut buf = vec![0u8; 64];
    let err = groups[0]
        .allreduce(
            &mut buf,
            DataType::I32,
            ReduceOp::Sum,
            deadline_after(Duration::from_millis(200)),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            CollectiveError::Transport(TransportError::Timeout { peer: Some(1), .. })
        ),
        "got {err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn an_aborting_peer_fails_waiters_fast() {
    let groups = job(3, 4096, 2);
    std::thread::scope(|s| {
        let (a, b, c) = (&groups[0], &groups[1], &groups[2]);
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            c.abort("test aborts rank 2");
        });
        for g in [a, b] {
            s.spawn(move || {
                let start = Instant::now();
                let mut buf = vec![0u8; 1 << 16];
                let err = g
                    .allreduce(
                        &mut buf,
                        DataType::I32,
                        ReduceOp::Sum,
                        deadline_after(Duration::from_secs(60)),
                    )
                    .unwrap_err();
                assert!(
                    matches!(
                        err,
                        CollectiveError::Transport(TransportError::ConnectionLost { peer: 2, .. })
                    ),
                    "got {err:?}"
                );
                assert!(start.elapsed() < Duration::from_secs(5));
                // The group is unusable afterwards, and says so at once.
                let again = g.allreduce(
                    &mut buf,
                    DataType::I32,
                    ReduceOp::Sum,
                    deadline_after(Duration::from_secs(60)),
                );
                assert!(
                    matches!(
                        again,
                        Err(CollectiveError::Transport(TransportError::Aborted { .. }))
                    ),
                    "got {again:?}"
                );
            });
        }
    });
}

#[test]
fn a_dropped_peer_is_seen_as_gone() {
    let mut groups = job(2, 4096, 2);
    drop(groups.pop());
    let mut buf = vec![0u8; 64];
    let start = Instant::now();
    let err = groups[0]
        .allreduce(
            &mut buf,
            DataType::I32,
            ReduceOp::Sum,
            deadline_after(Duration::from_secs(60)),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            CollectiveError::Transport(TransportError::ConnectionLost { peer: 1, .. })
        ),
        "got {err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn mismatched_settings_are_refused() {
    let name = unique_job_name("hora-shm-test");
    let errs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|r| {
                let name = name.clone();
                s.spawn(move || {
                    let mut c = ShmConfig::new(r, 2, name);
                    c.slice_bytes = 4096 * (r + 1);
                    c.connect_timeout = Duration::from_secs(10);
                    ShmGroup::connect(&c).map(|_| ())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for e in errs {
        let e = e.unwrap_err().to_string();
        assert!(e.contains("same shared-memory settings"), "{e}");
    }
}

#[test]
fn broadcast_allgather_barrier_and_allreduce_interleave() {
    for n in 1..=4 {
        let groups = job(n, 256, 2);
        std::thread::scope(|s| {
            for g in &groups {
                s.spawn(move || {
                    let me = g.rank();
                    let dl = || deadline_after(Duration::from_secs(30));
                    for (call, &len) in [0usize, 1, 255, 1024, 5000, 70_001].iter().enumerate() {
                        // Broadcast from a rotating root.
                        let root = call % n;
                        let want: Vec<u8> = (0..len).map(|i| (i * 7 + root) as u8).collect();
                        let mut buf = if me == root {
                            want.clone()
                        } else {
                            vec![0xEE; len]
                        };
                        g.broadcast(&mut buf, root, dl()).unwrap();
                        assert_eq!(buf, want, "broadcast n={n} len={len}");
                        // Ragged allgather: rank r gives len/(r+1) bytes.
                        let per: Vec<usize> = (0..n).map(|r| len / (r + 1)).collect();
                        let mine: Vec<u8> = (0..per[me]).map(|i| (i + 31 * me) as u8).collect();
                        let mut out = vec![0u8; per.iter().sum()];
                        g.allgatherv(&mine, &mut out, &per, dl()).unwrap();
                        let want: Vec<u8> = (0..n)
                            .flat_map(|r| (0..per[r]).map(move |i| (i + 31 * r) as u8))
                            .collect();
                        assert_eq!(out, want, "allgather n={n} len={len}");
                        g.barrier(dl()).unwrap();
                        let elems = len / 4;
                        let mut buf = input(me, call, elems);
                        g.allreduce(&mut buf, DataType::I32, ReduceOp::Sum, dl())
                            .unwrap();
                        assert_eq!(buf, expected(n, call, elems));
                    }
                });
            }
        });
    }
}

#[test]
fn barrier_waits_for_the_last_rank() {
    let groups = job(3, 4096, 2);
    let start = Instant::now();
    std::thread::scope(|s| {
        for g in &groups {
            s.spawn(move || {
                if g.rank() == 2 {
                    std::thread::sleep(Duration::from_millis(150));
                }
                g.barrier(deadline_after(Duration::from_secs(30))).unwrap();
                assert!(
                    start.elapsed() >= Duration::from_millis(140),
                    "left the barrier early"
                );
            });
        }
    });
}

#[test]
fn reducescatter_leaves_each_rank_its_reduced_block() {
    for n in 1..=4 {
        let groups = job(n, 256, 2);
        std::thread::scope(|s| {
            for g in &groups {
                s.spawn(move || {
                    let me = g.rank();
                    for (call, &elems) in [0usize, 5, 64, 1001, 20_000].iter().enumerate() {
                        // Uneven blocks: rank r gets (r+1) shares.
                        let shares: usize = (1..=n).sum();
                        let mut per: Vec<usize> =
                            (0..n).map(|r| elems * (r + 1) / shares * 4).collect();
                        per[n - 1] += elems * 4 - per.iter().sum::<usize>();
                        let inp = input(me, call, elems);
                        let mut out = vec![0u8; per[me]];
                        g.reducescatter(
                            &inp,
                            &mut out,
                            &per,
                            DataType::I32,
                            ReduceOp::Sum,
                            deadline_after(Duration::from_secs(30)),
                        )
                        .unwrap();
                        let all = expected(n, call, elems);
                        let start: usize = per[..me].iter().sum();
                        assert_eq!(out, all[start..start + per[me]], "n={n} elems={elems}");
                        // An allreduce right after still agrees on the step numbers.
                        let mut buf = input(me, call + 100, elems);
                        g.allreduce(
                            &mut buf,
                            DataType::I32,
                            ReduceOp::Sum,
                            deadline_after(Duration::from_secs(30)),
                        )
                        .unwrap();
                        assert_eq!(buf, expected(n, call + 100, elems));
                    }
                });
            }
        });
    }
}
