//! Ring allgather, ragged (each rank may contribute a different number of bytes, including
//! none), on its own and as the second half of ring allreduce.
//!
//! How it works. The output is cut into one block per rank, block `r` being rank `r`'s
//! contribution. In step `s` (of `size - 1`), rank `r` sends block `r - s` to its right
//! neighbour and receives block `r - s - 1` from its left neighbour straight into place (all
//! indices mod `size`). What arrives in one step is forwarded in the next, so after `size - 1`
//! steps every block has visited every rank. Each rank sends and receives `(size - 1) / size`
//! of the data, the minimum for a ring.
//!
//! Pipelining. Each step's blocks are cut into segments and all of the step's sends and
//! receives go into one `wait`, so the transport moves them full-duplex and back to back;
//! nothing needs the CPU between segments, as received bytes land where they belong.

use std::ops::Range;
use std::time::Instant;

use hora_transport::{CollectiveError, Op, Tag, Transport, TransportError};

use super::segments::{blocks_from_sizes, segment_bytes};
use super::{Ring, neighbours, split_disjoint};

/// The `allgatherv` collective: validates, places this rank's input, runs the ring phase.
pub(super) fn allgatherv<T: Transport + ?Sized>(
    ring: &Ring<T>,
    input: &[u8],
    output: &mut [u8],
    bytes_per_rank: &[usize],
    tag: Tag,
    deadline: Instant,
) -> Result<(), CollectiveError> {
    let t = &**ring.transport();
    let me = t.rank();
    let blocks = blocks_from_sizes(bytes_per_rank);
    output[blocks[me].clone()].copy_from_slice(input);
    Ok(allgather_phase(
        t,
        tag,
        output,
        &blocks,
        ring.segment_bytes(),
        deadline,
    )?)
}

/// Runs the ring allgather over `buf` cut into `blocks` (one per rank): on entry rank `r`'s
/// block `r` is in place; on return every block is.
pub(super) fn allgather_phase<T: Transport + ?Sized>(
    t: &T,
    tag: Tag,
    buf: &mut [u8],
    blocks: &[Range<usize>],
    max_segment_bytes: usize,
    deadline: Instant,
) -> Result<(), TransportError> {
    let (me, size) = (t.rank(), t.size());
    if size == 1 {
        return Ok(());
    }
    let (left, right) = neighbours(me, size);
    let seg = segment_bytes(1, max_segment_bytes);
    for s in 0..size - 1 {
        let send_b = (me + size - s) % size;
        let recv_b = (me + 2 * size - s - 1) % size;
        let (send, recv) = split_disjoint(buf, blocks[send_b].clone(), blocks[recv_b].clone());
        let mut ops: Vec<Op<'_>> = send.chunks(seg).map(|c| Op::send(right, tag, c)).collect();
        ops.extend(recv.chunks_mut(seg).map(|c| Op::recv(left, tag, c)));
        if !ops.is_empty() {
            t.wait(&mut ops, deadline)?;
        }
    }
    Ok(())
}
