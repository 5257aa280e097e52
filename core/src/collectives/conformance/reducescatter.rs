//! Reducescatter checks.

use super::inputs::{same, scales};
use super::{Collectives, Seq, call_err, deadline, input, mix, reference};
use crate::collectives::segments::blocks_from_sizes;
use crate::reduce::scale;
use crate::types::{DataType, ReduceOp};

/// Reducescatter with uneven blocks (some empty) for every dtype and op, and one past 1 MiB.
pub fn reducescatter_uneven(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    let np = c.size();
    let layouts: [&dyn Fn(usize) -> usize; 2] = [&|r| (mix(r, 1, 5) % 6) as usize, &|r| {
        [61, 0, 1031, 7, 1][r % 5]
    }];
    let mut salt = 400;
    for layout in layouts {
        let elems: Vec<usize> = (0..np).map(layout).collect();
        for dtype in DataType::ALL {
            for op in ReduceOp::ELEMENTWISE {
                salt += 1;
                check_reducescatter(c, seq, dtype, op, &elems, salt)?;
            }
        }
    }
    let elems: Vec<usize> = (0..np)
        .map(|r| [70_001, 0, 130_000, 99_999, 12_347][r % 5] * 2)
        .collect();
    for (dtype, op) in [
        (DataType::F32, ReduceOp::Sum),
        (DataType::I32, ReduceOp::Max),
    ] {
        salt += 1;
        check_reducescatter(c, seq, dtype, op, &elems, salt)?;
    }
    Ok(())
}

/// One reducescatter of this rank's [`input`] into blocks of `elems[r]` elements for rank
/// `r`, checked against this rank's block of the [`reference()`].
fn check_reducescatter(
    c: &dyn Collectives,
    seq: &mut Seq,
    dtype: DataType,
    op: ReduceOp,
    elems: &[usize],
    salt: usize,
) -> Result<(), String> {
    let (me, np) = (c.rank(), c.size());
    let total: usize = elems.iter().sum();
    let bytes: Vec<usize> = elems.iter().map(|e| e * dtype.size()).collect();
    let mut inp = input(dtype, op, me, total, salt);
    let mut out = vec![0xEE; bytes[me]];
    // Average runs as Sum, then the engine's division (other ops: the op itself, no scaling).
    let (_, post, rop) = scales(op, 1.0, 1.0, np);
    let what = format!("reducescatter {dtype} {op} of blocks {elems:?}");
    c.reducescatter(
        &mut inp,
        &mut out,
        &bytes,
        dtype,
        rop,
        seq.take(),
        deadline(),
    )
    .map_err(|e| call_err(&what, e))?;
    scale(&mut out, dtype, post);
    let want = reference(dtype, op, np, total, salt, 1.0, 1.0);
    same(
        &what,
        &out,
        &want[blocks_from_sizes(&bytes)[me].clone()],
        dtype.size(),
    )
}
