//! Inputs and their references: deterministic per-rank inputs, the sequential reference
//! result, and the byte-exact comparison.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ::half::{bf16, f16};
use hora_transport::CollectiveError;

use super::Collectives;
use crate::reduce::{reduce_into, scale};
use crate::types::{DataType, ReduceOp};

/// Pseudo-random integer from a few coordinates.
pub fn mix(a: usize, b: usize, c: usize) -> u64 {
    let mut x = (a as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (b as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ (c as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 32)
}

/// Deterministic, seed-dependent bytes for the data-moving collectives (the transport
/// table's generator).
pub use hora_transport::conformance::pattern;

/// Writes a small integer as element `i` of `buf` (exact in every dtype).
fn put(buf: &mut [u8], dtype: DataType, i: usize, v: i64) {
    let s = dtype.size();
    let dst = &mut buf[i * s..(i + 1) * s];
    match dtype {
        DataType::U8 => dst[0] = v as u8,
        DataType::I8 => dst[0] = v as i8 as u8,
        DataType::Bool => dst[0] = u8::from(v != 0),
        DataType::I16 => dst.copy_from_slice(&(v as i16).to_le_bytes()),
        DataType::U16 => dst.copy_from_slice(&(v as u16).to_le_bytes()),
        DataType::I32 => dst.copy_from_slice(&(v as i32).to_le_bytes()),
        DataType::I64 => dst.copy_from_slice(&v.to_le_bytes()),
        DataType::F32 => dst.copy_from_slice(&(v as f32).to_le_bytes()),
        DataType::F64 => dst.copy_from_slice(&(v as f64).to_le_bytes()),
        DataType::F16 => dst.copy_from_slice(&f16::from_f32(v as f32).to_le_bytes()),
        DataType::Bf16 => dst.copy_from_slice(&bf16::from_f32(v as f32).to_le_bytes()),
    }
}

/// Rank `rank`'s input: values chosen so that every op's result over up to 8 ranks is exact
/// in every dtype (sums of 0..=4, products of ±1 and 2, min/max of small integers), so
/// results compare bitwise whatever order an implementation reduces in.
pub fn input(dtype: DataType, op: ReduceOp, rank: usize, elems: usize, salt: usize) -> Vec<u8> {
    let mut buf = vec![0u8; elems * dtype.size()];
    for i in 0..elems {
        let r = mix(rank, i, salt);
        let v = match op {
            // Adasum has its own inputs and check (`adasum.rs`); small sums do no harm here.
            ReduceOp::Sum | ReduceOp::Average | ReduceOp::Adasum => (r % 5) as i64,
            ReduceOp::Product if matches!(dtype, DataType::U8 | DataType::U16) => {
                1 + (r % 2) as i64
            }
            ReduceOp::Product => [1, 2, -1][(r % 3) as usize],
            ReduceOp::Min | ReduceOp::Max if matches!(dtype, DataType::U8 | DataType::U16) => {
                (r % 100) as i64
            }
            ReduceOp::Min | ReduceOp::Max => (r % 100) as i64 - 50,
        };
        put(&mut buf, dtype, i, v);
    }
    buf
}

type RefKey = (DataType, ReduceOp, usize, usize, usize, u64, u64);
type RefCell = Arc<OnceLock<Arc<Vec<u8>>>>;

/// The sequential reference of an allreduce of [`input`]s with the engine's scaling:
/// each input times `prescale`, folded in rank order, times `postscale` (divided by `np`
/// for Average). Memoised: on threads every rank asks for the same reference.
pub fn reference(
    dtype: DataType,
    op: ReduceOp,
    np: usize,
    elems: usize,
    salt: usize,
    prescale: f64,
    postscale: f64,
) -> Arc<Vec<u8>> {
    static CACHE: OnceLock<Mutex<HashMap<RefKey, RefCell>>> = OnceLock::new();
    let key = (
        dtype,
        op,
        np,
        elems,
        salt,
        prescale.to_bits(),
        postscale.to_bits(),
    );
    let cell = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_init(|| {
        let (pre, post, rop) = scales(op, prescale, postscale, np);
        let mut acc = input(dtype, op, 0, elems, salt);
        scale(&mut acc, dtype, pre);
        for r in 1..np {
            let mut x = input(dtype, op, r, elems, salt);
            scale(&mut x, dtype, pre);
            reduce_into(&mut acc, &x, dtype, rop).expect("reference reduction");
        }
        scale(&mut acc, dtype, post);
        Arc::new(acc)
    })
    .clone()
}

/// The engine's rule: Average runs as Sum with the postscale divided by the rank count.
pub(super) fn scales(op: ReduceOp, pre: f64, post: f64, np: usize) -> (f64, f64, ReduceOp) {
    if op == ReduceOp::Average {
        (pre, post / np as f64, ReduceOp::Sum)
    } else {
        (pre, post, op)
    }
}

/// An allreduce as the engine runs it: prescale, the collective (Average as Sum), postscale.
#[allow(clippy::too_many_arguments)]
pub fn allreduce_scaled(
    c: &dyn Collectives,
    buf: &mut [u8],
    dtype: DataType,
    op: ReduceOp,
    prescale: f64,
    postscale: f64,
    seq: u64,
    deadline: Instant,
) -> Result<(), CollectiveError> {
    let (pre, post, op) = scales(op, prescale, postscale, c.size());
    scale(buf, dtype, pre);
    c.allreduce(buf, dtype, op, seq, deadline)?;
    scale(buf, dtype, post);
    Ok(())
}

/// `Ok` if `got == want`, else where they first differ.
pub(super) fn same(
    what: impl fmt::Display,
    got: &[u8],
    want: &[u8],
    elem: usize,
) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} bytes, expected {}",
            got.len(),
            want.len()
        ));
    }
    let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
    let e = i / elem.max(1) * elem.max(1);
    let end = (e + elem.max(1)).min(got.len());
    Err(format!(
        "{what}: element {} (byte {i}) is {:02x?}, expected {:02x?}",
        i / elem.max(1),
        &got[e..end],
        &want[e..end]
    ))
}
