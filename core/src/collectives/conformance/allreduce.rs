//! Allreduce checks: every dtype, op and size; large buffers; average with pre/post scale;
//! inexact floats agree across ranks.

use ::half::{bf16, f16};

use super::inputs::same;
use super::{Collectives, Seq, allreduce_scaled, call_err, deadline, input, mix, reference};
use crate::types::{DataType, ReduceOp};

/// One allreduce of this rank's [`input`] (prescaled and postscaled by `scale`) checked
/// against the [`reference()`]; `what` names it in a failure.
#[allow(clippy::too_many_arguments)]
fn check_allreduce(
    c: &dyn Collectives,
    seq: &mut Seq,
    dtype: DataType,
    op: ReduceOp,
    elems: usize,
    salt: usize,
    (pre, post): (f64, f64),
    what: &str,
) -> Result<(), String> {
    let mut buf = input(dtype, op, c.rank(), elems, salt);
    allreduce_scaled(c, &mut buf, dtype, op, pre, post, seq.take(), deadline())
        .map_err(|e| call_err(what, e))?;
    let want = reference(dtype, op, c.size(), elems, salt, pre, post);
    same(what, &buf, &want, dtype.size())
}

/// Element counts for the many-combination checks: empty, one, primes, past 32 KiB.
const SMALL_ELEMS: [usize; 8] = [0, 1, 2, 7, 13, 61, 1031, 4099];

/// Every dtype × op × small size (0, 1, primes; up to 32 KiB), against the reference.
pub fn allreduce_every_dtype_op_and_size(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    for (salt, &elems) in SMALL_ELEMS.iter().enumerate() {
        for dtype in DataType::ALL {
            for op in ReduceOp::ELEMENTWISE {
                let what = format!("allreduce {dtype} {op} of {elems} elements");
                check_allreduce(c, seq, dtype, op, elems, salt, (1.0, 1.0), &what)?;
            }
        }
    }
    Ok(())
}

/// One allreduce per dtype past 1 MiB (several ring segments and shared-memory slices; an
/// odd element count), cycling through the ops.
pub fn allreduce_large(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    for (i, dtype) in DataType::ALL.into_iter().enumerate() {
        let op = ReduceOp::ELEMENTWISE[i % ReduceOp::ELEMENTWISE.len()];
        let elems = (1 << 20) / dtype.size() + 2 * 4099 + 1;
        let salt = 100 + i;
        let what = format!("allreduce {dtype} {op} of {elems} elements");
        check_allreduce(c, seq, dtype, op, elems, salt, (1.0, 1.0), &what)?;
    }
    Ok(())
}

/// Average and prescale/postscale, the way the engine applies them, for every dtype.
pub fn allreduce_average_prescale_postscale(
    c: &dyn Collectives,
    seq: &mut Seq,
) -> Result<(), String> {
    let cases = [
        (ReduceOp::Average, 1.0, 1.0),
        (ReduceOp::Sum, 2.0, 0.5),
        (ReduceOp::Average, 0.5, 3.0),
        (ReduceOp::Sum, 1.0, 0.25),
        (ReduceOp::Max, 4.0, 1.0),
    ];
    for dtype in DataType::ALL {
        for (k, &(op, pre, post)) in cases.iter().enumerate() {
            let elems = 1031;
            let salt = 200 + k;
            let what = format!("allreduce {dtype} {op} prescale {pre} postscale {post}");
            check_allreduce(c, seq, dtype, op, elems, salt, (pre, post), &what)?;
        }
    }
    Ok(())
}

/// Random fractions (the sum depends on the order of additions): every rank must end with
/// the same bits, checked by allgathering a hash of each rank's result.
pub fn allreduce_inexact_floats_agree(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    let (me, np) = (c.rank(), c.size());
    let floats = [DataType::F16, DataType::Bf16, DataType::F32, DataType::F64];
    for (k, elems) in [4099usize, (1 << 20) / 4 + 13].into_iter().enumerate() {
        for dtype in floats {
            let value =
                |rank: usize, i: usize| (mix(rank, i, 300 + k) % 1_000_000) as f64 / 7919.0 - 60.0;
            let mut buf = vec![0u8; elems * dtype.size()];
            for i in 0..elems {
                let x = value(me, i);
                let s = dtype.size();
                let dst = &mut buf[i * s..(i + 1) * s];
                match dtype {
                    DataType::F16 => dst.copy_from_slice(&f16::from_f64(x).to_le_bytes()),
                    DataType::Bf16 => dst.copy_from_slice(&bf16::from_f64(x).to_le_bytes()),
                    DataType::F32 => dst.copy_from_slice(&(x as f32).to_le_bytes()),
                    _ => dst.copy_from_slice(&x.to_le_bytes()),
                }
            }
            let what = format!("inexact allreduce {dtype} sum of {elems} elements");
            c.allreduce(&mut buf, dtype, ReduceOp::Sum, seq.take(), deadline())
                .map_err(|e| call_err(&what, e))?;
            if dtype == DataType::F64 {
                // It really is a sum (not one rank's input), up to rounding.
                let got = f64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
                let want: f64 = (0..np).map(|r| value(r, 0)).sum();
                if (got - want).abs() > 1e-9 {
                    return Err(format!("{what}: element 0 is {got}, expected about {want}"));
                }
            }
            let mine = fnv1a(&buf).to_le_bytes();
            let mut all = vec![0u8; 8 * np];
            c.allgatherv(&mine, &mut all, &vec![8; np], seq.take(), deadline())
                .map_err(|e| call_err(format!("allgather of the hashes after {what}"), e))?;
            let hashes: Vec<&[u8]> = all.chunks(8).collect();
            if hashes.iter().any(|h| *h != hashes[0]) {
                let differ: Vec<usize> = (0..np).filter(|&r| hashes[r] != hashes[0]).collect();
                return Err(format!(
                    "{what}: ranks {differ:?} hold different bits than rank 0"
                ));
            }
        }
    }
    Ok(())
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}
