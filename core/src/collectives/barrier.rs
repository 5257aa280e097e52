//! Dissemination barrier.
//!
//! How it works. In round `k` (while `2^k < size`), rank `r` sends an empty message to rank
//! `r + 2^k` and waits for one from rank `r - 2^k` (mod `size`). After round `k`, a rank has
//! heard, directly or through the chain, from the `2^(k+1) - 1` ranks before it, so after
//! `ceil(log2 size)` rounds it knows every rank has entered. Each round uses a different
//! distance, so no pair of ranks exchanges twice in one barrier and one tag suffices.

use std::time::Instant;

use hora_transport::{Op, Tag, Transport, TransportError};

/// The `barrier` collective.
pub(super) fn barrier<T: Transport + ?Sized>(
    t: &T,
    tag: Tag,
    deadline: Instant,
) -> Result<(), TransportError> {
    let (me, size) = (t.rank(), t.size());
    let mut distance = 1;
    while distance < size {
        let mut ops = [
            Op::send((me + distance) % size, tag, &[]),
            Op::recv((me + size - distance) % size, tag, &mut []),
        ];
        t.wait(&mut ops, deadline)?;
        distance *= 2;
    }
    Ok(())
}
