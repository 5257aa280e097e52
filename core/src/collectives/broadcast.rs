//! Broadcast from any root as a pipelined chain.
//!
//! How it works. Ranks form a chain in ring order starting at the root:
//! `root → root+1 → … → root-1`. The buffer is cut into segments. The root sends them all; the
//! last rank of the chain receives them all in place; every rank in between, at iteration `k`,
//! forwards segment `k` to the right while receiving segment `k + 1` from the left, in one
//! full-duplex wait. Once the pipeline is full every link is busy, so a large buffer takes
//! about `len / bandwidth + (size - 2) · segment / bandwidth`, almost independent of the rank
//! count.

use std::time::Instant;

use hora_transport::{CollectiveError, Op, Tag, Transport};

use super::segments::segment_bytes;
use super::{Ring, neighbours};

/// The `broadcast` collective.
pub(super) fn broadcast<T: Transport + ?Sized>(
    ring: &Ring<T>,
    buf: &mut [u8],
    root: usize,
    tag: Tag,
    deadline: Instant,
) -> Result<(), CollectiveError> {
    let t = &**ring.transport();
    let (me, size) = (t.rank(), t.size());
    if size == 1 || buf.is_empty() {
        return Ok(());
    }
    let (left, right) = neighbours(me, size);
    let seg = segment_bytes(1, ring.segment_bytes());
    let position = (me + size - root) % size;
    if position == 0 {
        let mut ops: Vec<Op<'_>> = buf.chunks(seg).map(|c| Op::send(right, tag, c)).collect();
        return Ok(t.wait(&mut ops, deadline)?);
    }
    if position == size - 1 {
        let mut ops: Vec<Op<'_>> = buf
            .chunks_mut(seg)
            .map(|c| Op::recv(left, tag, c))
            .collect();
        return Ok(t.wait(&mut ops, deadline)?);
    }
    let len = buf.len();
    let segments = len.div_ceil(seg);
    t.recv(left, tag, &mut buf[..seg.min(len)], deadline)?;
    for k in 0..segments {
        // Segment k is here; k + 1 starts where `tail` does.
        let (head, tail) = buf.split_at_mut(((k + 1) * seg).min(len));
        let mut ops = vec![Op::send(right, tag, &head[k * seg..])];
        if k + 1 < segments {
            let n = seg.min(tail.len());
            ops.push(Op::recv(left, tag, &mut tail[..n]));
        }
        t.wait(&mut ops, deadline)?;
    }
    Ok(())
}
