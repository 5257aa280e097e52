//! Latency-optimal allreduce for small buffers: recursive doubling.
//!
//! How it works. With `p` the largest power of two ≤ `size`, ranks `p..size` first hand their
//! buffer to rank `r - p`, which folds it in. Then, for `k = 0, 1, ...` while `2^k < p`, rank
//! `r` swaps its whole buffer with rank `r ^ 2^k` and both combine the two. After `log2 p`
//! steps every one of the first `p` ranks holds the full reduction, and ranks `p..size` get a
//! copy back from their partner. That is `log2 p` (+2) message latencies instead of the
//! ring's `2 (size - 1)`, at the cost of sending the whole buffer each step — the right trade
//! for buffers of a few KiB, where latency is everything.
//!
//! Bit-identical results: at each step the two partners compute `lower op higher` (the value
//! of the lower rank on the left), so both hold the same bits even for operations whose
//! result could depend on operand order (NaN payloads).

use std::time::Instant;

use hora_transport::{CollectiveError, Op, Tag, Transport};

use super::Ring;
use crate::reduce::reduce_into;
use crate::types::{DataType, ReduceOp};

/// Recursive-doubling allreduce of `buf` (in place).
pub(super) fn allreduce<T: Transport + ?Sized>(
    ring: &Ring<T>,
    buf: &mut [u8],
    dtype: DataType,
    op: ReduceOp,
    tag: Tag,
    deadline: Instant,
) -> Result<(), CollectiveError> {
    let t = &**ring.transport();
    let (me, size) = (t.rank(), t.size());
    let p = 1usize << (usize::BITS - 1 - size.leading_zeros());
    let mut scratch = ring.scratch(buf.len());
    let theirs = &mut scratch[..buf.len()];
    let combine = |mine: &mut [u8], theirs: &mut [u8], i_am_lower: bool| {
        if i_am_lower {
            reduce_into(mine, theirs, dtype, op)
        } else {
            reduce_into(theirs, mine, dtype, op).map(|()| mine.copy_from_slice(theirs))
        }
        .map_err(CollectiveError::invalid)
    };
    if me >= p {
        // An extra rank: its partner below does the work.
        t.send(me - p, tag, buf, deadline)?;
        return Ok(t.recv(me - p, tag, buf, deadline)?);
    }
    if me + p < size {
        t.recv(me + p, tag, theirs, deadline)?;
        combine(buf, theirs, true)?;
    }
    let mut mask = 1;
    while mask < p {
        let partner = me ^ mask;
        t.wait(
            &mut [Op::send(partner, tag, buf), Op::recv(partner, tag, theirs)],
            deadline,
        )?;
        combine(buf, theirs, me < partner)?;
        mask <<= 1;
    }
    if me + p < size {
        t.send(me + p, tag, buf, deadline)?;
    }
    Ok(())
}
