//! Adasum on the in-process transport (ranks are threads) against the sequential reference,
//! for every float dtype, 1..=8 ranks (powers of two and not), odd lengths and fused tensors;
//! plus hand-computed cases that pin the formula itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hora_transport::conformance::run_ranks;
use hora_transport::{LocalTransport, Tag, deadline_after};

use super::super::conformance::adasum::{close, decode, encode, values};
use super::super::kind;
use super::*;
use crate::collectives::Collectives;
use crate::types::ReduceOp;

use super::super::conformance::adasum::FLOATS;

fn deadline() -> Instant {
    deadline_after(Duration::from_secs(60))
}

/// Runs Adasum of [`values`] over `counts` on `np` threads; returns every rank's result.
fn run(np: usize, dtype: DataType, counts: &[usize], salt: usize, seg: usize) -> Vec<Vec<u8>> {
    let n: usize = counts.iter().sum();
    run_ranks(LocalTransport::create(np), |r, t| {
        let ring = Ring::new(Arc::new(t.clone())).with_segment_bytes(seg);
        let mut buf = encode(dtype, &values(r, n, salt));
        let tag = Tag::new(kind::ALLREDUCE, salt as u64);
        allreduce(&ring, &mut buf, dtype, counts, tag, deadline()).unwrap();
        buf
    })
}

fn reference_of(np: usize, dtype: DataType, counts: &[usize], salt: usize) -> Vec<u8> {
    let n: usize = counts.iter().sum();
    let inputs: Vec<Vec<u8>> = (0..np)
        .map(|r| encode(dtype, &values(r, n, salt)))
        .collect();
    adasum_reference(&inputs, dtype, counts).unwrap()
}

#[test]
fn matches_the_reference_for_every_float_dtype_and_rank_count() {
    for np in 1..=8 {
        for dtype in FLOATS {
            for (salt, n) in [0usize, 1, 2, 3, 17, 1000].into_iter().enumerate() {
                let results = run(np, dtype, &[n], salt, 1 << 20);
                let want = reference_of(np, dtype, &[n], salt);
                for (r, got) in results.iter().enumerate() {
                    assert_eq!(got, &results[0], "np {np} {dtype} n {n}: rank {r} differs");
                }
                close(
                    dtype,
                    np,
                    &[n],
                    &decode(dtype, &results[0]),
                    &decode(dtype, &want),
                )
                .unwrap_or_else(|e| panic!("n {n}: {e}"));
            }
        }
    }
}

#[test]
fn fused_tensors_are_each_combined_on_their_own() {
    // Halves cut through tensors at every level; an empty tensor and a one-element one too.
    let counts = [5, 0, 1, 13, 2, 40, 3];
    for np in [2, 3, 4, 5, 8] {
        for dtype in FLOATS {
            let results = run(np, dtype, &counts, 9, 1 << 20);
            let want = reference_of(np, dtype, &counts, 9);
            close(
                dtype,
                np,
                &counts,
                &decode(dtype, &results[0]),
                &decode(dtype, &want),
            )
            .unwrap();
            if np == 2 && dtype == DataType::F64 {
                // Not one Adasum over the whole buffer: the tensors really are kept apart.
                let whole = reference_of(np, dtype, &[counts.iter().sum()], 9);
                assert_ne!(want, whole);
            }
        }
    }
}

#[test]
fn two_vectors_follow_the_formula() {
    // a = [1, 0], b = [1, 1]: a·b = 1, |a|² = 1, |b|² = 2, so
    // (1 - 1/2) a + (1 - 1/4) b = [1.25, 0.75].
    let results = run_ranks(LocalTransport::create(2), |r, t| {
        let ring = Ring::new(Arc::new(t.clone()));
        let v = if r == 0 { [1.0, 0.0] } else { [1.0, 1.0] };
        let mut buf = encode(DataType::F64, &v);
        ring.allreduce(&mut buf, DataType::F64, ReduceOp::Adasum, 1, deadline())
            .unwrap();
        decode(DataType::F64, &buf)
    });
    assert_eq!(results, vec![vec![1.25, 0.75]; 2]);
    // Orthogonal vectors add; equal vectors stay as they are; a zero vector changes nothing.
    for (a, b, want) in [
        ([2.0, 0.0], [0.0, 3.0], [2.0, 3.0]),
        ([2.0, -1.0], [2.0, -1.0], [2.0, -1.0]),
        ([0.0, 0.0], [4.0, 5.0], [4.0, 5.0]),
    ] {
        let out = run_ranks(LocalTransport::create(2), |r, t| {
            let ring = Ring::new(Arc::new(t.clone()));
            let mut buf = encode(DataType::F32, if r == 0 { &a } else { &b });
            ring.allreduce(&mut buf, DataType::F32, ReduceOp::Adasum, 1, deadline())
                .unwrap();
            decode(DataType::F32, &buf)
        });
        assert_eq!(out[0], want, "{a:?} ⊕ {b:?}");
    }
}

#[test]
fn three_ranks_fold_the_third_into_the_first() {
    // x0 = [1, 0], x1 = [0, 1], x2 = [1, 0]: x0 ⊕ x2 = x0 (equal), then [1, 0] ⊕ [0, 1] = [1, 1].
    let inputs = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]];
    let out = run_ranks(LocalTransport::create(3), |r, t| {
        let ring = Ring::new(Arc::new(t.clone()));
        let mut buf = encode(DataType::F64, &inputs[r]);
        ring.allreduce(&mut buf, DataType::F64, ReduceOp::Adasum, 1, deadline())
            .unwrap();
        decode(DataType::F64, &buf)
    });
    assert_eq!(out, vec![vec![1.0, 1.0]; 3]);
    let enc: Vec<Vec<u8>> = inputs.iter().map(|v| encode(DataType::F64, v)).collect();
    let r = adasum_reference(&enc, DataType::F64, &[2]).unwrap();
    assert_eq!(decode(DataType::F64, &r), [1.0, 1.0]);
}

#[test]
fn adasum_is_neither_the_sum_nor_the_average_of_the_test_inputs() {
    // Guards the sweep above: its inputs must tell Adasum apart from the element-wise ops.
    let np = 4;
    let want = decode(DataType::F64, &reference_of(np, DataType::F64, &[100], 3));
    let sum: Vec<f64> = (0..100)
        .map(|i| (0..np).map(|r| values(r, 100, 3)[i]).sum())
        .collect();
    let gap = |x: &[f64], s: f64| {
        want.iter()
            .zip(x)
            .map(|(w, v)| (w - v * s).abs())
            .fold(0f64, f64::max)
    };
    assert!(gap(&sum, 1.0) > 0.1, "Adasum equals the sum");
    assert!(
        gap(&sum, 1.0 / np as f64) > 0.1,
        "Adasum equals the average"
    );
}

#[test]
fn integer_dtypes_and_bad_counts_are_refused() {
    let t = LocalTransport::create(1).remove(0);
    let ring = Ring::new(Arc::new(t));
    for dtype in [DataType::U8, DataType::I8, DataType::I32, DataType::I64] {
        let mut buf = vec![0u8; 4 * dtype.size()];
        let err = ring
            .allreduce(&mut buf, dtype, ReduceOp::Adasum, 1, deadline())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Adasum") && err.contains(dtype.name()),
            "{err}"
        );
    }
    let mut buf = vec![0u8; 8];
    let tag = Tag::new(kind::ALLREDUCE, 1);
    let err = allreduce(&ring, &mut buf, DataType::F32, &[3], tag, deadline()).unwrap_err();
    assert!(err.to_string().contains("sum to 3"), "{err}");
    let err = adasum_reference(&[vec![0; 4]], DataType::I32, &[1]).unwrap_err();
    assert!(err.to_string().contains("float"), "{err}");
}

#[test]
fn pieces_cover_a_range_once_in_tensor_order() {
    let off = offsets(&[3, 0, 4, 2]);
    let mut seen = Vec::new();
    pieces(&off, 2..8, |t, r| seen.push((t, r)));
    assert_eq!(seen, vec![(0, 2..3), (2, 3..7), (3, 7..8)]);
    seen.clear();
    pieces(&off, 5..5, |t, r| seen.push((t, r)));
    assert!(seen.is_empty());
}
