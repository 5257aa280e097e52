//! The collectives on the in-process transport (ranks are threads), against sequential
//! references: every dtype and op, awkward sizes, tiny segments to reach the pipelined paths.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ::half::{bf16, f16};
use hora_transport::conformance::run_ranks;
use hora_transport::{LocalTransport, Transport, TransportError, deadline_after};

use super::*;
use crate::reduce::reduce_into;

const OPS: [ReduceOp; 5] = [
    ReduceOp::Sum,
    ReduceOp::Min,
    ReduceOp::Max,
    ReduceOp::Product,
    ReduceOp::Average,
];

fn deadline() -> Instant {
    deadline_after(Duration::from_secs(60))
}

/// Runs `f(ring)` on every rank of a fresh job with the given segment size.
fn on_ranks<R: Send>(
    np: usize,
    seg: usize,
    f: impl Fn(&Ring<LocalTransport>) -> R + Sync,
) -> Vec<R> {
    on_ranks_with(np, seg, DEFAULT_SMALL_ALLREDUCE_BYTES, f)
}

/// Like [`on_ranks`], also choosing the largest allreduce that uses recursive doubling.
fn on_ranks_with<R: Send>(
    np: usize,
    seg: usize,
    small: usize,
    f: impl Fn(&Ring<LocalTransport>) -> R + Sync,
) -> Vec<R> {
    run_ranks(LocalTransport::create(np), |_, t| {
        f(&Ring::new(Arc::new(t.clone()))
            .with_segment_bytes(seg)
            .with_small_allreduce_bytes(small))
    })
}

/// Pseudo-random integer from a few coordinates.
fn mix(a: usize, b: usize, c: usize) -> u64 {
    let mut x = (a as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (b as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ (c as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 32)
}

/// Encodes a small integer as one element of `dtype` (exact in every type).
fn encode(dtype: DataType, v: i64) -> Vec<u8> {
    match dtype {
        DataType::U8 => vec![v as u8],
        DataType::I8 => (v as i8).to_le_bytes().to_vec(),
        DataType::I32 => (v as i32).to_le_bytes().to_vec(),
        DataType::I64 => v.to_le_bytes().to_vec(),
        DataType::F32 => (v as f32).to_le_bytes().to_vec(),
        DataType::F64 => (v as f64).to_le_bytes().to_vec(),
        DataType::F16 => f16::from_f32(v as f32).to_le_bytes().to_vec(),
        DataType::Bf16 => bf16::from_f32(v as f32).to_le_bytes().to_vec(),
    }
}

/// Rank `rank`'s input: values chosen so that every op's result is exact in every dtype
/// (sums of 0..4 over ≤ 8 ranks, products of ±1 and 2, min/max of small integers), so the
/// comparison with the reference can be bitwise.
fn input(dtype: DataType, op: ReduceOp, rank: usize, elems: usize, salt: usize) -> Vec<u8> {
    (0..elems)
        .flat_map(|i| {
            let r = mix(rank, i, salt);
            let v = match op {
                ReduceOp::Sum | ReduceOp::Average => (r % 5) as i64,
                ReduceOp::Product if dtype == DataType::U8 => 1 + (r % 2) as i64,
                ReduceOp::Product => [1, 2, -1][(r % 3) as usize],
                ReduceOp::Min | ReduceOp::Max if dtype == DataType::U8 => (r % 100) as i64,
                ReduceOp::Min | ReduceOp::Max => (r % 100) as i64 - 50,
            };
            encode(dtype, v)
        })
        .collect()
}

/// The sequential reference: rank inputs folded in rank order.
fn reference(dtype: DataType, op: ReduceOp, np: usize, elems: usize, salt: usize) -> Vec<u8> {
    let mut acc = input(dtype, op, 0, elems, salt);
    for r in 1..np {
        reduce_into(&mut acc, &input(dtype, op, r, elems, salt), dtype, op).unwrap();
    }
    acc
}

#[test]
fn allreduce_matches_reference_for_every_dtype_op_and_size() {
    for np in 1..=8 {
        for (salt, elems) in [0usize, 1, 13, np * 5 + 3, 200].into_iter().enumerate() {
            // Tiny segments and the default through the ring, then recursive doubling.
            for (seg, small) in [(16, 0), (DEFAULT_SEGMENT_BYTES, 0), (16, usize::MAX)] {
                let results = on_ranks_with(np, seg, small, |ring| {
                    let mut out = Vec::new();
                    for (i, dtype) in DataType::ALL.into_iter().enumerate() {
                        for (j, op) in OPS.into_iter().enumerate() {
                            let mut buf = input(dtype, op, ring.rank(), elems, salt);
                            let seq = (i * OPS.len() + j) as u64;
                            ring.allreduce(&mut buf, dtype, op, seq, deadline())
                                .unwrap();
                            out.push(buf);
                        }
                    }
                    out
                });
                let mut k = 0;
                for dtype in DataType::ALL {
                    for op in OPS {
                        let want = reference(dtype, op, np, elems, salt);
                        for (rank, res) in results.iter().enumerate() {
                            assert_eq!(
                                res[k], want,
                                "np {np} elems {elems} seg {seg} small {small} {dtype} {op} rank {rank}"
                            );
                        }
                        k += 1;
                    }
                }
            }
        }
    }
}

#[test]
fn large_allreduce_is_exact_and_pipelined() {
    // Over 1 MiB, not divisible by the rank count, with segments small enough for many per
    // step and the default segment size.
    let elems = (1 << 18) + 3;
    for (np, dtype, seg) in [
        (2, DataType::F32, 64 << 10),
        (3, DataType::F32, DEFAULT_SEGMENT_BYTES),
        (4, DataType::F16, 16 << 10),
        (5, DataType::I32, 100_003),
        (8, DataType::F64, 64 << 10),
    ] {
        let want = reference(dtype, ReduceOp::Sum, np, elems, 7);
        let results = on_ranks(np, seg, |ring| {
            let mut buf = input(dtype, ReduceOp::Sum, ring.rank(), elems, 7);
            ring.allreduce(&mut buf, dtype, ReduceOp::Sum, 1, deadline())
                .unwrap();
            buf
        });
        for (rank, got) in results.iter().enumerate() {
            assert!(
                got == &want,
                "np {np} {dtype} seg {seg}: rank {rank} differs from reference"
            );
        }
    }
}

#[test]
fn inexact_float_sums_are_bit_identical_on_every_rank() {
    // Random fractions: the result depends on summation order, so this checks that every rank
    // ends with the owner's bits rather than its own order of additions.
    for (np, dtype, seg) in [
        (3, DataType::F32, 40),
        (5, DataType::F16, 64),
        (8, DataType::Bf16, 6),
        (7, DataType::F64, 1000),
    ] {
        // small = 0: the ring; usize::MAX: recursive doubling.
        for small in [0, usize::MAX] {
            let elems = 1001;
            let results = on_ranks_with(np, seg, small, |ring| {
                let mut buf: Vec<u8> = (0..elems)
                    .flat_map(|i| {
                        let x = (mix(ring.rank(), i, 99) % 1_000_000) as f64 / 7919.0 - 60.0;
                        match dtype {
                            DataType::F32 => (x as f32).to_le_bytes().to_vec(),
                            DataType::F64 => x.to_le_bytes().to_vec(),
                            DataType::F16 => f16::from_f64(x).to_le_bytes().to_vec(),
                            _ => bf16::from_f64(x).to_le_bytes().to_vec(),
                        }
                    })
                    .collect();
                ring.allreduce(&mut buf, dtype, ReduceOp::Sum, 3, deadline())
                    .unwrap();
                buf
            });
            assert!(
                results.iter().all(|r| r == &results[0]),
                "np {np} {dtype} small {small}: ranks disagree"
            );
            // And it really is a sum (not, say, one rank's input): compare loosely with f64.
            if dtype == DataType::F64 {
                let got = f64::from_le_bytes(results[0][..8].try_into().unwrap());
                let want: f64 = (0..np)
                    .map(|r| (mix(r, 0, 99) % 1_000_000) as f64 / 7919.0 - 60.0)
                    .sum();
                assert!((got - want).abs() < 1e-9, "{got} vs {want}");
            }
        }
    }
}

#[test]
fn reducescatter_with_uneven_blocks_matches_reference() {
    for np in 1..=8 {
        for (salt, seg) in [(0usize, 16usize), (1, DEFAULT_SEGMENT_BYTES), (2, 3)] {
            // Block sizes 0..=5 elements, different per rank.
            let elems_per_rank: Vec<usize> =
                (0..np).map(|r| (mix(r, salt, 5) % 6) as usize).collect();
            let total: usize = elems_per_rank.iter().sum();
            let results = on_ranks(np, seg, |ring| {
                let mut out = Vec::new();
                for (i, dtype) in DataType::ALL.into_iter().enumerate() {
                    let bytes: Vec<usize> =
                        elems_per_rank.iter().map(|e| e * dtype.size()).collect();
                    for (j, op) in OPS.into_iter().enumerate() {
                        let mut inp = input(dtype, op, ring.rank(), total, salt);
                        let mut output = vec![0xEE; bytes[ring.rank()]];
                        let seq = (i * OPS.len() + j) as u64;
                        ring.reducescatter(
                            &mut inp,
                            &mut output,
                            &bytes,
                            dtype,
                            op,
                            seq,
                            deadline(),
                        )
                        .unwrap();
                        out.push(output);
                    }
                }
                out
            });
            let mut k = 0;
            for dtype in DataType::ALL {
                let blocks = segments::blocks_from_sizes(
                    &elems_per_rank
                        .iter()
                        .map(|e| e * dtype.size())
                        .collect::<Vec<_>>(),
                );
                for op in OPS {
                    let want = reference(dtype, op, np, total, salt);
                    for (rank, res) in results.iter().enumerate() {
                        assert_eq!(
                            res[k],
                            want[blocks[rank].clone()],
                            "np {np} seg {seg} {dtype} {op} rank {rank}"
                        );
                    }
                    k += 1;
                }
            }
        }
    }
}

#[test]
fn large_reducescatter_is_exact() {
    let np = 4;
    let elems_per_rank = [70_001usize, 0, 130_000, 99_999];
    let total: usize = elems_per_rank.iter().sum();
    let dtype = DataType::F32;
    let bytes: Vec<usize> = elems_per_rank.iter().map(|e| e * 4).collect();
    let want = reference(dtype, ReduceOp::Sum, np, total, 11);
    let blocks = segments::blocks_from_sizes(&bytes);
    let results = on_ranks(np, 50_000, |ring| {
        let mut inp = input(dtype, ReduceOp::Sum, ring.rank(), total, 11);
        let mut out = vec![0; bytes[ring.rank()]];
        ring.reducescatter(
            &mut inp,
            &mut out,
            &bytes,
            dtype,
            ReduceOp::Sum,
            0,
            deadline(),
        )
        .unwrap();
        out
    });
    for (rank, got) in results.iter().enumerate() {
        assert!(got[..] == want[blocks[rank].clone()], "rank {rank}");
    }
}

#[test]
fn allgatherv_with_ragged_sizes() {
    for np in 1..=8 {
        for (salt, seg) in [(0usize, 5usize), (1, DEFAULT_SEGMENT_BYTES)] {
            let sizes: Vec<usize> = (0..np)
                .map(|r| (mix(r, salt, 1) % 40) as usize * usize::from(r % 3 != 1))
                .collect();
            let total: usize = sizes.iter().sum();
            let results = on_ranks(np, seg, |ring| {
                let mine = hora_transport::conformance::pattern(
                    ring.rank() + 100 * salt,
                    sizes[ring.rank()],
                );
                let mut out = vec![0xEE; total];
                ring.allgatherv(&mine, &mut out, &sizes, salt as u64, deadline())
                    .unwrap();
                out
            });
            let want: Vec<u8> = (0..np)
                .flat_map(|r| hora_transport::conformance::pattern(r + 100 * salt, sizes[r]))
                .collect();
            for (rank, got) in results.iter().enumerate() {
                assert_eq!(got, &want, "np {np} seg {seg} rank {rank} sizes {sizes:?}");
            }
        }
    }
    // Large and pipelined.
    let sizes = [300_000usize, 0, 1_000_003];
    let results = on_ranks(3, 65_536, |ring| {
        let mine = hora_transport::conformance::pattern(ring.rank(), sizes[ring.rank()]);
        let mut out = vec![0; sizes.iter().sum()];
        ring.allgatherv(&mine, &mut out, &sizes, 9, deadline())
            .unwrap();
        out
    });
    let want: Vec<u8> = (0..3)
        .flat_map(|r| hora_transport::conformance::pattern(r, sizes[r]))
        .collect();
    assert!(results.iter().all(|r| r == &want));
}

#[test]
fn broadcast_from_every_root() {
    for np in 1..=8 {
        for (len, seg) in [
            (0usize, 4usize),
            (1, 4),
            (13, 4),
            (1000, 7),
            (100_003, DEFAULT_SEGMENT_BYTES),
        ] {
            let results = on_ranks(np, seg, |ring| {
                let mut out = Vec::new();
                for root in 0..np {
                    let mut buf = if ring.rank() == root {
                        hora_transport::conformance::pattern(root + len, len)
                    } else {
                        vec![0xEE; len]
                    };
                    ring.broadcast(&mut buf, root, root as u64, deadline())
                        .unwrap();
                    out.push(buf);
                }
                out
            });
            for root in 0..np {
                let want = hora_transport::conformance::pattern(root + len, len);
                for (rank, res) in results.iter().enumerate() {
                    assert!(
                        res[root] == want,
                        "np {np} len {len} seg {seg} root {root} rank {rank}"
                    );
                }
            }
        }
    }
}

#[test]
fn alltoallv_with_random_uneven_splits() {
    for np in 1..=8 {
        for salt in 0..3 {
            // split[s][d]: bytes rank s sends to rank d; about a third are zero.
            let split: Vec<Vec<usize>> = (0..np)
                .map(|s| {
                    (0..np)
                        .map(|d| {
                            let x = mix(s, d, salt) % 60;
                            if x < 20 { 0 } else { x as usize }
                        })
                        .collect()
                })
                .collect();
            let part = |s: usize, d: usize| {
                hora_transport::conformance::pattern(1000 * s + d + 7 * salt, split[s][d])
            };
            let results = on_ranks(np, DEFAULT_SEGMENT_BYTES, |ring| {
                let me = ring.rank();
                let send: Vec<usize> = split[me].clone();
                let recv: Vec<usize> = (0..np).map(|s| split[s][me]).collect();
                let inp: Vec<u8> = (0..np).flat_map(|d| part(me, d)).collect();
                let mut out = vec![0xEE; recv.iter().sum()];
                ring.alltoallv(&inp, &send, &mut out, &recv, salt as u64, deadline())
                    .unwrap();
                out
            });
            for (me, got) in results.iter().enumerate() {
                let want: Vec<u8> = (0..np).flat_map(|s| part(s, me)).collect();
                assert_eq!(got, &want, "np {np} salt {salt} rank {me}");
            }
        }
    }
}

#[test]
fn barrier_waits_for_every_rank() {
    for np in 1..=8 {
        let entered = AtomicUsize::new(0);
        on_ranks(np, DEFAULT_SEGMENT_BYTES, |ring| {
            for round in 0..3u64 {
                // Late ranks arrive last; nobody may leave before they arrive.
                std::thread::sleep(Duration::from_millis((ring.rank() as u64 * 3) % 7));
                entered.fetch_add(1, Ordering::SeqCst);
                ring.barrier(round, deadline()).unwrap();
                let seen = entered.load(Ordering::SeqCst);
                assert!(
                    seen >= np * (round as usize + 1),
                    "np {np} round {round}: left after {seen} entries"
                );
                // Second barrier so no rank runs into the next round's count early.
                ring.barrier(100 + round, deadline()).unwrap();
            }
        });
    }
}

#[test]
fn many_collectives_in_a_row_reuse_one_ring() {
    let results = on_ranks(4, 24, |ring| {
        let mut sums = Vec::new();
        for seq in 0..50u64 {
            let elems = (seq as usize * 7) % 61;
            let mut buf = input(
                DataType::I32,
                ReduceOp::Sum,
                ring.rank(),
                elems,
                seq as usize,
            );
            ring.allreduce(&mut buf, DataType::I32, ReduceOp::Sum, seq, deadline())
                .unwrap();
            sums.push(buf);
        }
        sums
    });
    for (seq, _) in results[0].iter().enumerate() {
        let elems = (seq * 7) % 61;
        let want = reference(DataType::I32, ReduceOp::Sum, 4, elems, seq);
        assert!(results.iter().all(|r| r[seq] == want), "seq {seq}");
    }
}

#[test]
fn works_through_a_dyn_transport() {
    let results = run_ranks(LocalTransport::create(3), |_, t| {
        let t: Arc<dyn Transport> = Arc::new(t.clone());
        let ring: Ring<dyn Transport> = Ring::new(t).with_segment_bytes(8);
        let coll: &dyn Collectives = &ring;
        let mut buf = encode(DataType::I64, coll.rank() as i64 + 1).repeat(10);
        coll.allreduce(&mut buf, DataType::I64, ReduceOp::Sum, 0, deadline())
            .unwrap();
        (coll.size(), buf)
    });
    for (size, buf) in results {
        assert_eq!(size, 3);
        assert_eq!(buf, encode(DataType::I64, 6).repeat(10));
    }
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    const F32: DataType = DataType::F32;
    const SUM: ReduceOp = ReduceOp::Sum;
    let results = on_ranks(2, 16, |ring| {
        let d = deadline();
        vec![
            ring.allreduce(&mut [0; 6], DataType::F32, ReduceOp::Sum, 0, d)
                .is_err(),
            ring.allgatherv(&[0; 3], &mut [0; 5], &[3], 0, d).is_err(),
            ring.allgatherv(&[0; 3], &mut [0; 4], &[3, 2], 0, d)
                .is_err(),
            ring.broadcast(&mut [0; 4], 2, 0, d).is_err(),
            ring.alltoallv(&[0; 4], &[2, 2], &mut [0; 4], &[2, 1], 0, d)
                .is_err(),
            ring.reducescatter(&mut [0; 8], &mut [0; 4], &[4, 2], F32, SUM, 0, d)
                .is_err(),
            // A valid call after the refused ones still works.
            ring.reducescatter(&mut [0; 6], &mut [0; 3], &[3, 3], DataType::I8, SUM, 0, d)
                .is_ok(),
        ]
    });
    for errs in results {
        assert!(errs.iter().all(|&e| e), "{errs:?}");
    }
}

#[test]
fn a_failed_peer_is_an_error_not_a_hang() {
    let results = on_ranks(3, 16, |ring| {
        if ring.rank() == 2 {
            ring.transport().abort("rank 2 failed on purpose");
            return None;
        }
        let mut buf = vec![1u8; 1000];
        let d = deadline_after(Duration::from_secs(5));
        Some(ring.allreduce(&mut buf, DataType::U8, ReduceOp::Sum, 0, d))
    });
    // Rank 0 receives from rank 2 and sees it gone; rank 1 waits on rank 0 until the
    // deadline at the latest. Neither succeeds.
    assert!(
        matches!(
            results[0],
            Some(Err(TransportError::ConnectionLost { peer: 2, .. }))
        ),
        "{:?}",
        results[0]
    );
    assert!(matches!(results[1], Some(Err(_))), "{:?}", results[1]);
}

#[test]
fn a_missing_rank_times_out_at_the_deadline() {
    let ts = LocalTransport::create(2);
    let ring = Ring::new(Arc::new(ts[0].clone()));
    let start = Instant::now();
    let err = ring
        .barrier(0, deadline_after(Duration::from_millis(100)))
        .unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}
