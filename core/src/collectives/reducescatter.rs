//! Ring reduce-scatter, on its own (the `reducescatter` collective, uneven blocks allowed) and
//! as the first half of ring allreduce.
//!
//! How it works. The buffer is cut into one chunk per rank. In step `s` (of `size - 1`), rank
//! `r` sends chunk `r - s - 1` to its right neighbour and receives chunk `r - s - 2` from its
//! left neighbour, which it reduces into its own copy (all indices mod `size`). What a rank
//! receives in one step is what it sends in the next, so each chunk travels once round the
//! ring, starting at the rank after its owner and gaining one contribution per hop; after the
//! last step rank `r` holds chunk `r` fully reduced. Each element is combined in one fixed
//! order, by one chain of ranks, so the result does not depend on timing.
//!
//! ```text
//!   3 ranks, chunks a b c        step 0                 step 1
//!   rank 0 owns a          sends c, gets b (b0+b2)   sends b0+b2, gets a1+a2 → a done
//!   rank 1 owns b          sends a, gets c (c1+c0)   sends c1+c0, gets b0+b2 → b done
//!   rank 2 owns c          sends b, gets a (a2+a1)   sends a2+a1, gets c1+c0 → c done
//! ```
//!
//! Pipelining. A step is cut into segments. Segment `k` is received into one of two scratch
//! slots; before reducing it, the send and receive of segment `k + 1` are posted and
//! started (`Transport::progress`), so the network moves `k + 1` while the CPU reduces `k`.

use std::ops::Range;
use std::time::Instant;

use hora_transport::{CollectiveError, Op, Tag, Transport};

use super::segments::{blocks_from_sizes, segment_bytes};
use super::{Ring, neighbours, split_disjoint};
use crate::reduce::reduce_into;
use crate::types::{DataType, ReduceOp};

/// The `reducescatter` collective: validates, runs the ring phase over `input`, copies this
/// rank's block to `output`.
#[allow(clippy::too_many_arguments)]
pub(super) fn reducescatter<T: Transport + ?Sized>(
    ring: &Ring<T>,
    input: &mut [u8],
    output: &mut [u8],
    bytes_per_rank: &[usize],
    dtype: DataType,
    op: ReduceOp,
    tag: Tag,
    deadline: Instant,
) -> Result<(), CollectiveError> {
    let t = &**ring.transport();
    let me = t.rank();
    let blocks = blocks_from_sizes(bytes_per_rank);
    reduce_scatter_phase(ring, input, &blocks, dtype, op, tag, deadline)?;
    output.copy_from_slice(&input[blocks[me].clone()]);
    Ok(())
}

/// Runs the ring reduce-scatter over `buf` cut into `chunks` (one per rank, element-aligned);
/// afterwards `buf[chunks[rank]]` holds the reduction of that chunk over all ranks. Other
/// chunks are left partially reduced.
pub(super) fn reduce_scatter_phase<T: Transport + ?Sized>(
    ring: &Ring<T>,
    buf: &mut [u8],
    chunks: &[Range<usize>],
    dtype: DataType,
    op: ReduceOp,
    tag: Tag,
    deadline: Instant,
) -> Result<(), CollectiveError> {
    let t = &**ring.transport();
    let (me, size) = (t.rank(), t.size());
    if size == 1 {
        return Ok(());
    }
    let (left, right) = neighbours(me, size);
    let seg = segment_bytes(dtype.size(), ring.segment_bytes());
    // Two slots, each as large as the largest segment that can occur.
    let largest = chunks.iter().map(|c| c.len()).max().unwrap_or(0);
    let slot = seg.min(largest);
    let mut scratch = ring.scratch(2 * slot);
    let (slot_a, rest) = scratch.split_at_mut(slot);
    let slot_b = &mut rest[..slot];
    let io = StepIo {
        t,
        tag,
        left,
        right,
        seg,
        dtype,
        op,
        deadline,
    };
    for s in 0..size - 1 {
        let send_c = (me + 2 * size - s - 1) % size;
        let recv_c = (me + 2 * size - s - 2) % size;
        let (send, recv) = split_disjoint(buf, chunks[send_c].clone(), chunks[recv_c].clone());
        io.step(send, recv, slot_a, slot_b)?;
    }
    Ok(())
}

/// What every step of one reduce-scatter shares.
struct StepIo<'t, T: Transport + ?Sized> {
    t: &'t T,
    tag: Tag,
    left: usize,
    right: usize,
    seg: usize,
    dtype: DataType,
    op: ReduceOp,
    deadline: Instant,
}

impl<T: Transport + ?Sized> StepIo<'_, T> {
    /// Byte range of segment `k` in a chunk of `len` bytes.
    fn seg_range(&self, k: usize, len: usize) -> Range<usize> {
        (k * self.seg).min(len)..((k + 1) * self.seg).min(len)
    }

    /// Posts segment `k`'s send (from `send`) and receive (into `slot`), whichever exist.
    fn ops<'b>(
        &self,
        k: usize,
        send: &'b [u8],
        slot: &'b mut [u8],
        recv_len: usize,
    ) -> Vec<Op<'b>> {
        let mut ops = Vec::with_capacity(2);
        if k < send.len().div_ceil(self.seg) {
            ops.push(Op::send(
                self.right,
                self.tag,
                &send[self.seg_range(k, send.len())],
            ));
        }
        if k < recv_len.div_ceil(self.seg) {
            let n = self.seg_range(k, recv_len).len();
            ops.push(Op::recv(self.left, self.tag, &mut slot[..n]));
        }
        ops
    }

    /// One ring step: sends `send` to the right, and reduces what arrives from the left into
    /// `recv`, a segment at a time, overlapping each reduction with the next segment's IO.
    fn step(
        &self,
        send: &[u8],
        recv: &mut [u8],
        slot_a: &mut [u8],
        slot_b: &mut [u8],
    ) -> Result<(), CollectiveError> {
        let segments = send.len().max(recv.len()).div_ceil(self.seg);
        if segments == 0 {
            return Ok(());
        }
        // Segment 0 has nothing before it to overlap with.
        self.t
            .wait(&mut self.ops(0, send, slot_a, recv.len()), self.deadline)?;
        let recv_segments = recv.len().div_ceil(self.seg);
        for k in 0..segments {
            // Segment k sits in one slot; k + 1 goes into the other.
            let (cur, next): (&[u8], &mut [u8]) = if k % 2 == 0 {
                (&*slot_a, &mut *slot_b)
            } else {
                (&*slot_b, &mut *slot_a)
            };
            let mut ops = self.ops(k + 1, send, next, recv.len());
            if !ops.is_empty() {
                self.t.progress(&mut ops)?;
            }
            if k < recv_segments {
                let r = self.seg_range(k, recv.len());
                let n = r.len();
                reduce_into(&mut recv[r], &cur[..n], self.dtype, self.op)
                    .map_err(CollectiveError::invalid)?;
            }
            if !ops.is_empty() {
                self.t.wait(&mut ops, self.deadline)?;
            }
        }
        Ok(())
    }
}
