//! Ring allreduce: reduce-scatter, then allgather.
//!
//! How it works. The buffer is cut into one element-aligned chunk per rank
//! ([`split_chunks`]). The reduce-scatter phase (`size - 1` steps, see `reducescatter.rs`)
//! leaves rank `r` holding chunk `r` reduced over all ranks; the allgather phase (`size - 1`
//! steps, see `allgather_ring.rs`) copies each reduced chunk round the ring. Each rank sends
//! `2 (size - 1) / size` of the buffer in total, independent of the rank count, which is the
//! least any algorithm can send. Every element is reduced once, by one chain of ranks, and
//! then copied, so all ranks end with bit-identical results.
//!
//! Both phases use one tag: messages from the left neighbour arrive in the order it sent them,
//! and both sides derive every message's length from the buffer length and the segment size.

use std::time::Instant;

use hora_transport::{CollectiveError, Tag, Transport};

use super::Ring;
use super::allgather_ring::allgather_phase;
use super::reducescatter::reduce_scatter_phase;
use super::segments::split_chunks;
use crate::types::{DataType, ReduceOp};

/// The `allreduce` collective (in place).
pub(super) fn allreduce<T: Transport + ?Sized>(
    ring: &Ring<T>,
    buf: &mut [u8],
    dtype: DataType,
    op: ReduceOp,
    tag: Tag,
    deadline: Instant,
) -> Result<(), CollectiveError> {
    let t = &**ring.transport();
    let size = t.size();
    if size == 1 || buf.is_empty() {
        return Ok(());
    }
    let chunks = split_chunks(buf.len(), dtype.size(), size);
    reduce_scatter_phase(ring, buf, &chunks, dtype, op, tag, deadline)?;
    Ok(allgather_phase(
        t,
        tag,
        buf,
        &chunks,
        ring.segment_bytes(),
        deadline,
    )?)
}
