//! Alltoall with per-rank split sizes, by pairwise exchange.
//!
//! How it works. Rank `r` keeps its own part locally. In step `s` (1..size) it sends its part
//! for rank `r + s` and receives rank `r - s`'s part for it, both in one wait so the exchange
//! is full-duplex (indices mod `size`). Every ordered pair of ranks meets in exactly one step,
//! and in each step every rank sends to one rank and receives from one, so no link is shared.
//! Zero-byte parts are still exchanged as empty messages, which keeps both sides in step.

use std::time::Instant;

use hora_transport::{CollectiveError, Op, Tag, Transport};

use super::segments::blocks_from_sizes;

/// The `alltoallv` collective.
pub(super) fn alltoallv<T: Transport + ?Sized>(
    t: &T,
    input: &[u8],
    send_bytes: &[usize],
    output: &mut [u8],
    recv_bytes: &[usize],
    tag: Tag,
    deadline: Instant,
) -> Result<(), CollectiveError> {
    let (me, size) = (t.rank(), t.size());
    let send_blocks = blocks_from_sizes(send_bytes);
    let recv_blocks = blocks_from_sizes(recv_bytes);
    output[recv_blocks[me].clone()].copy_from_slice(&input[send_blocks[me].clone()]);
    for s in 1..size {
        let to = (me + s) % size;
        let from = (me + size - s) % size;
        let mut ops = [
            Op::send(to, tag, &input[send_blocks[to].clone()]),
            Op::recv(from, tag, &mut output[recv_blocks[from].clone()]),
        ];
        t.wait(&mut ops, deadline)?;
    }
    Ok(())
}
