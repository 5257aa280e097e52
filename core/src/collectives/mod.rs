//! Collective algorithms over a [`Transport`]: allreduce (Adasum included), allgather,
//! broadcast, alltoall, reducescatter and barrier, built only from point-to-point sends and
//! receives.
//!
//! [`Collectives`] (defined by the backend contract, `hora_transport`) is the interface the
//! engine calls; [`Ring`] implements it over any transport, and [`Dispatch`] puts a native
//! backend (shared memory, MPI, hierarchical, later NCCL) in front of a ring: arguments are
//! checked once ([`check`]), then each call runs natively or on the ring. The arithmetic of
//! who-sends-which-bytes lives in [`segments`] and is pure; the files beside it hold one
//! algorithm each, with a "how it works" comment at the top.
//!
//! Tags: every collective call uses one tag, `Tag::new(kind, seq)`, with its own kind byte in
//! the range 32..=47 reserved for collectives and the caller's sequence number. Messages
//! between a pair with the same tag arrive in order, and every rank derives each message's
//! length from the same arguments, so one tag per call is enough for all of its steps.
//!
//! What this module does not do: decide *what* runs (the coordinator), fuse tensors or apply
//! Average's division (the engine), or recover from a failed peer (a transport error is
//! returned; the engine aborts the job).

mod adasum;
mod allgather_ring;
mod allreduce_ring;
mod allreduce_small;
mod alltoall;
mod barrier;
mod broadcast;
pub mod check;
#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
mod dispatch;
mod hierarchical;
mod reducescatter;
pub mod segments;
mod subgroup;

#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hora_transport::{Rank, Tag, Transport};
use parking_lot::{Mutex, MutexGuard};

use crate::types::{DataType, ReduceOp};

pub use adasum::adasum_reference;
pub use dispatch::Dispatch;
pub use hierarchical::{DEFAULT_PIPELINE_BYTES, Hierarchical, HierarchicalMode, Layout, Place};
pub use hora_transport::{Call, CollectiveError, Collectives};
pub use subgroup::SubTransport;

/// Tag kind bytes of the collectives (32..=47 are reserved for them).
pub(crate) mod kind {
    /// Allreduce.
    pub(crate) const ALLREDUCE: u8 = 32;
    /// Allgather(v).
    pub(crate) const ALLGATHER: u8 = 33;
    /// Broadcast.
    pub(crate) const BROADCAST: u8 = 34;
    /// Alltoall(v).
    pub(crate) const ALLTOALL: u8 = 35;
    /// Reducescatter.
    pub(crate) const REDUCESCATTER: u8 = 36;
    /// Barrier.
    pub(crate) const BARRIER: u8 = 37;
}

/// Default largest message of a pipelined ring step: big enough to amortise per-message
/// costs, small enough that reducing one segment overlaps with receiving the next.
pub const DEFAULT_SEGMENT_BYTES: usize = 1 << 20;

/// Allreduces up to this size use recursive doubling: below it, latency beats bandwidth.
pub const DEFAULT_SMALL_ALLREDUCE_BYTES: usize = 64 << 10;

/// Ring, chain, pairwise and dissemination algorithms over a [`Transport`].
///
/// Holds a scratch buffer that grows to the largest size needed and is reused across calls, so
/// steady-state collectives allocate nothing large.
pub struct Ring<T: Transport + ?Sized> {
    transport: Arc<T>,
    /// Atomic so autotune can change it between calls through a shared reference; the
    /// algorithms read it once per call.
    segment_bytes: AtomicUsize,
    small_bytes: usize,
    scratch: Mutex<Vec<u8>>,
}

impl<T: Transport + ?Sized> Ring<T> {
    /// Runs collectives over `transport` with the default segment size.
    pub fn new(transport: Arc<T>) -> Self {
        Self {
            transport,
            segment_bytes: AtomicUsize::new(DEFAULT_SEGMENT_BYTES),
            small_bytes: DEFAULT_SMALL_ALLREDUCE_BYTES,
            scratch: Mutex::new(Vec::new()),
        }
    }

    /// Sets the largest message of a pipelined step (at least one element is always sent).
    /// Every rank must use the same value.
    pub fn with_segment_bytes(self, n: usize) -> Self {
        self.segment_bytes.store(n.max(1), Ordering::Relaxed);
        self
    }

    /// Allreduces of at most `n` bytes use recursive doubling (fewer message latencies) instead
    /// of the ring. Every rank must use the same value; 0 always uses the ring.
    pub fn with_small_allreduce_bytes(mut self, n: usize) -> Self {
        self.small_bytes = n;
        self
    }

    /// The transport the algorithms run over.
    pub fn transport(&self) -> &Arc<T> {
        &self.transport
    }

    /// The largest message of a pipelined step.
    pub fn segment_bytes(&self) -> usize {
        self.segment_bytes.load(Ordering::Relaxed)
    }

    /// The scratch buffer, grown to at least `len` bytes (never shrunk).
    fn scratch(&self, len: usize) -> MutexGuard<'_, Vec<u8>> {
        let mut s = self.scratch.lock();
        if s.len() < len {
            s.resize(len, 0);
        }
        s
    }
}

impl<T: Transport + ?Sized> fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("transport", &self.transport)
            .field("segment_bytes", &self.segment_bytes())
            .finish_non_exhaustive()
    }
}

/// The algorithms without the argument checks, for callers that ran [`check`] already (the
/// trait methods below and [`Dispatch`]).
impl<T: Transport + ?Sized> Ring<T> {
    pub(super) fn run_allreduce(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        let tag = Tag::new(kind::ALLREDUCE, seq);
        if op == ReduceOp::Adasum {
            let elems = buf.len() / dtype.size();
            return adasum::allreduce(self, buf, dtype, &[elems], tag, deadline);
        }
        if self.transport.size() > 1 && buf.len() <= self.small_bytes {
            return allreduce_small::allreduce(self, buf, dtype, op, tag, deadline);
        }
        allreduce_ring::allreduce(self, buf, dtype, op, tag, deadline)
    }

    pub(super) fn run_allgatherv(
        &self,
        input: &[u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        let tag = Tag::new(kind::ALLGATHER, seq);
        allgather_ring::allgatherv(self, input, output, bytes_per_rank, tag, deadline)
    }

    pub(super) fn run_broadcast(
        &self,
        buf: &mut [u8],
        root: usize,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        broadcast::broadcast(self, buf, root, Tag::new(kind::BROADCAST, seq), deadline)
    }

    pub(super) fn run_alltoallv(
        &self,
        input: &[u8],
        send_bytes: &[usize],
        output: &mut [u8],
        recv_bytes: &[usize],
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        let tag = Tag::new(kind::ALLTOALL, seq);
        alltoall::alltoallv(
            &*self.transport,
            input,
            send_bytes,
            output,
            recv_bytes,
            tag,
            deadline,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_reducescatter(
        &self,
        input: &mut [u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        let tag = Tag::new(kind::REDUCESCATTER, seq);
        reducescatter::reducescatter(
            self,
            input,
            output,
            bytes_per_rank,
            dtype,
            op,
            tag,
            deadline,
        )
    }

    pub(super) fn run_barrier(&self, seq: u64, deadline: Instant) -> Result<(), CollectiveError> {
        Ok(barrier::barrier(
            &*self.transport,
            Tag::new(kind::BARRIER, seq),
            deadline,
        )?)
    }
}

impl<T: Transport + ?Sized> Collectives for Ring<T> {
    fn rank(&self) -> usize {
        self.transport.rank()
    }

    fn set_segment_bytes(&self, n: usize) -> bool {
        self.segment_bytes.store(n.max(1), Ordering::Relaxed);
        true
    }

    fn size(&self) -> usize {
        self.transport.size()
    }

    fn allreduce(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        check::allreduce(buf.len(), dtype, op)?;
        self.run_allreduce(buf, dtype, op, seq, deadline)
    }

    fn allgatherv(
        &self,
        input: &[u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        check::allgatherv(self.rank(), self.size(), input, output, bytes_per_rank)?;
        self.run_allgatherv(input, output, bytes_per_rank, seq, deadline)
    }

    fn broadcast(
        &self,
        buf: &mut [u8],
        root: usize,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        check::broadcast(self.size(), root)?;
        self.run_broadcast(buf, root, seq, deadline)
    }

    fn alltoallv(
        &self,
        input: &[u8],
        send_bytes: &[usize],
        output: &mut [u8],
        recv_bytes: &[usize],
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        check::alltoallv(
            self.rank(),
            self.size(),
            input,
            send_bytes,
            output,
            recv_bytes,
        )?;
        self.run_alltoallv(input, send_bytes, output, recv_bytes, seq, deadline)
    }

    fn reducescatter(
        &self,
        input: &mut [u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        check::reducescatter(
            self.rank(),
            self.size(),
            input,
            output,
            bytes_per_rank,
            dtype,
        )?;
        check::reducescatter_op(op)?;
        self.run_reducescatter(input, output, bytes_per_rank, dtype, op, seq, deadline)
    }

    fn barrier(&self, seq: u64, deadline: Instant) -> Result<(), CollectiveError> {
        self.run_barrier(seq, deadline)
    }

    fn abort(&self, reason: &str) {
        self.transport.abort(reason);
    }
}

/// The neighbours in the ring `0 → 1 → … → size-1 → 0`: (left, right).
fn neighbours(rank: Rank, size: usize) -> (Rank, Rank) {
    ((rank + size - 1) % size, (rank + 1) % size)
}

/// Borrows two disjoint ranges of `buf`, one to read and one to write.
///
/// # Panics
/// If the ranges overlap or lie outside `buf` (the algorithms only pass disjoint chunks).
fn split_disjoint(buf: &mut [u8], read: Range<usize>, write: Range<usize>) -> (&[u8], &mut [u8]) {
    // Comparing ends with starts (not starts with starts) keeps empty ranges in bounds.
    if read.end <= write.start {
        let (a, b) = buf.split_at_mut(write.start);
        (&a[read], &mut b[..write.len()])
    } else {
        let (a, b) = buf.split_at_mut(read.start);
        (&b[..read.len()], &mut a[write])
    }
}
