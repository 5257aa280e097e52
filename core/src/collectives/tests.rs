//! Ring-specific sweeps on the in-process transport (ranks are threads): 1..=8 ranks, tiny
//! segments and forced recursive doubling to reach every pipelined and small-message path,
//! and argument checks. What every implementation must do (all collectives, dtypes, ops,
//! sizes, a dead rank) is the conformance table in `conformance.rs`, run for the ring over
//! every transport by `core/tests/collectives_conformance.rs`; the inputs and references here
//! come from it.

use std::sync::Arc;
use std::time::Duration;

use ::half::{bf16, f16};
use hora_transport::conformance::run_ranks;
use hora_transport::{CollectiveError, LocalTransport, Transport, TransportError, deadline_after};

use super::conformance::{self, input, mix};
use super::*;

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

/// The table's sequential reference, unscaled (the ring sums Average; the engine divides).
fn reference(dtype: DataType, op: ReduceOp, np: usize, elems: usize, salt: usize) -> Vec<u8> {
    let op = if op == ReduceOp::Average {
        ReduceOp::Sum
    } else {
        op
    };
    conformance::reference(dtype, op, np, elems, salt, 1.0, 1.0).to_vec()
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
fn allgatherv_with_ragged_sizes() {
    for np in 1..=8 {
        for (salt, seg) in [(0usize, 5usize), (1, DEFAULT_SEGMENT_BYTES)] {
            let sizes: Vec<usize> = (0..np)
                .map(|r| (mix(r, salt, 1) % 40) as usize * usize::from(r % 3 != 1))
                .collect();
            let total: usize = sizes.iter().sum();
            let results = on_ranks(np, seg, |ring| {
                let mine = conformance::pattern(ring.rank() + 100 * salt, sizes[ring.rank()]);
                let mut out = vec![0xEE; total];
                ring.allgatherv(&mine, &mut out, &sizes, salt as u64, deadline())
                    .unwrap();
                out
            });
            let want: Vec<u8> = (0..np)
                .flat_map(|r| conformance::pattern(r + 100 * salt, sizes[r]))
                .collect();
            for (rank, got) in results.iter().enumerate() {
                assert_eq!(got, &want, "np {np} seg {seg} rank {rank} sizes {sizes:?}");
            }
        }
    }
}

#[test]
fn broadcast_from_every_root() {
    for np in 1..=8 {
        for (len, seg) in [(0usize, 4usize), (1, 4), (13, 4), (1000, 7)] {
            let results = on_ranks(np, seg, |ring| {
                let mut out = Vec::new();
                for root in 0..np {
                    let mut buf = if ring.rank() == root {
                        conformance::pattern(root + len, len)
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
                let want = conformance::pattern(root + len, len);
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
        let mut buf = (coll.rank() as i64 + 1).to_le_bytes().repeat(10);
        coll.allreduce(&mut buf, DataType::I64, ReduceOp::Sum, 0, deadline())
            .unwrap();
        (coll.size(), buf)
    });
    for (size, buf) in results {
        assert_eq!(size, 3);
        assert_eq!(buf, 6i64.to_le_bytes().repeat(10));
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
fn a_missing_rank_times_out_at_the_deadline() {
    let ts = LocalTransport::create(2);
    let ring = Ring::new(Arc::new(ts[0].clone()));
    let start = Instant::now();
    let err = ring
        .barrier(0, deadline_after(Duration::from_millis(100)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CollectiveError::Transport(TransportError::Timeout { .. })
        ),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// A ring whose rank 1 flips one bit of every allreduce result past 4 KiB.
#[derive(Debug)]
struct FlipsABit(Ring<LocalTransport>);

impl Collectives for FlipsABit {
    fn rank(&self) -> usize {
        self.0.rank()
    }
    fn size(&self) -> usize {
        self.0.size()
    }
    fn allreduce(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        self.0.allreduce(buf, dtype, op, seq, deadline)?;
        if self.rank() == 1 && buf.len() > 4096 {
            buf[4097] ^= 1;
        }
        Ok(())
    }
    fn allgatherv(
        &self,
        input: &[u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        self.0
            .allgatherv(input, output, bytes_per_rank, seq, deadline)
    }
    fn broadcast(
        &self,
        buf: &mut [u8],
        root: usize,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        self.0.broadcast(buf, root, seq, deadline)
    }
    fn alltoallv(
        &self,
        input: &[u8],
        send_bytes: &[usize],
        output: &mut [u8],
        recv_bytes: &[usize],
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        self.0
            .alltoallv(input, send_bytes, output, recv_bytes, seq, deadline)
    }
    fn reducescatter(
        &self,
        input: &mut [u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        self.0
            .reducescatter(input, output, bytes_per_rank, dtype, op, seq, deadline)
    }
    fn barrier(&self, seq: u64, deadline: Instant) -> Result<(), CollectiveError> {
        self.0.barrier(seq, deadline)
    }
}

#[test]
fn the_conformance_table_catches_a_wrong_bit() {
    let job = |n: usize| -> Vec<conformance::Member> {
        LocalTransport::create(n)
            .into_iter()
            .map(|t| {
                let t = Arc::new(t);
                let c: Arc<dyn Collectives> = Arc::new(FlipsABit(Ring::new(t.clone())));
                conformance::Member::new(c, move |reason| t.abort(reason))
            })
            .collect()
    };
    let caught = std::panic::catch_unwind(|| {
        conformance::run_on_threads(&job, "allreduce_large", conformance::allreduce_large, 2..=3)
    })
    .expect_err("a flipped bit must fail the table");
    let msg = caught.downcast_ref::<String>().cloned().unwrap_or_default();
    // Rank 1 reports the element; the others fail because rank 1 aborted, not by hanging.
    assert!(
        msg.contains("np 2 rank 1: allreduce_large: allreduce u8 sum")
            && msg.contains("element 4097"),
        "{msg}"
    );
}
