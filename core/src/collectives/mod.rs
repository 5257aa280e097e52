//! Collective algorithms over a [`Transport`]: allreduce, allgather, broadcast, alltoall,
//! reducescatter and barrier, built only from point-to-point sends and receives.
//!
//! [`Collectives`] is the interface the engine calls; [`Ring`] implements it over any
//! transport (native backends such as MPI or NCCL may implement it themselves). The
//! arithmetic of who-sends-which-bytes lives in [`segments`] and is pure; the files beside it
//! hold one algorithm each, with a "how it works" comment at the top.
//!
//! Tags: every collective call uses one tag, `Tag::new(kind, seq)`, with its own kind byte in
//! the range 32..=47 reserved for collectives and the caller's sequence number. Messages
//! between a pair with the same tag arrive in order, and every rank derives each message's
//! length from the same arguments, so one tag per call is enough for all of its steps.
//!
//! What this module does not do: decide *what* runs (the coordinator), fuse tensors or apply
//! Average's division (the engine), or recover from a failed peer (a transport error is
//! returned; the engine aborts the job).

mod allgather_ring;
mod allreduce_ring;
mod allreduce_small;
mod alltoall;
mod barrier;
mod broadcast;
#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
mod hierarchical;
#[cfg(feature = "mpi")]
mod mpi;
mod reducescatter;
pub mod segments;
mod shm;
mod subgroup;

#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use hora_transport::{Rank, Tag, Transport, TransportError};
use parking_lot::{Mutex, MutexGuard};

use crate::types::{DataType, ReduceOp};

pub use hierarchical::{DEFAULT_PIPELINE_BYTES, Hierarchical, HierarchicalMode, Layout, Place};
#[cfg(feature = "mpi")]
pub use mpi::MpiCollectives;
pub use shm::ShmCollectives;
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

/// Collective algorithms over some way of moving bytes; the ring implementation is [`Ring`].
///
/// Every rank calls the same collectives in the same order with the same `seq`; argument
/// errors and transport failures come back as [`TransportError`], and every wait ends by
/// `deadline`.
pub trait Collectives: Send + Sync + fmt::Debug {
    /// This rank.
    fn rank(&self) -> usize;

    /// Number of ranks.
    fn size(&self) -> usize;

    /// In-place allreduce of `buf` (whole elements of `dtype`). `Average` is summed; the caller
    /// scales.
    fn allreduce(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), TransportError>;

    /// Gathers every rank's `input` (rank r contributes `bytes_per_rank[r]` bytes) into
    /// `output` (rank order, length = the sum).
    fn allgatherv(
        &self,
        input: &[u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        seq: u64,
        deadline: Instant,
    ) -> Result<(), TransportError>;

    /// Copies `root`'s `buf` into every rank's `buf`.
    fn broadcast(
        &self,
        buf: &mut [u8],
        root: usize,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), TransportError>;

    /// Sends `send_bytes[d]` bytes of `input` (consecutive, in rank order) to each rank `d` and
    /// receives `recv_bytes[s]` bytes from each rank `s` into `output` (rank order).
    fn alltoallv(
        &self,
        input: &[u8],
        send_bytes: &[usize],
        output: &mut [u8],
        recv_bytes: &[usize],
        seq: u64,
        deadline: Instant,
    ) -> Result<(), TransportError>;

    /// Reduces `input` (same length on every rank; used as scratch and clobbered) and leaves
    /// this rank's block in `output`: block r is `bytes_per_rank[r]` bytes, blocks are
    /// consecutive in rank order and together cover `input`.
    #[allow(clippy::too_many_arguments)]
    fn reducescatter(
        &self,
        input: &mut [u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), TransportError>;

    /// Returns once every rank has entered.
    fn barrier(&self, seq: u64, deadline: Instant) -> Result<(), TransportError>;

    /// Fails this rank's current and future collectives on state the backend owns beyond the
    /// engine's transport (shared memory), so peers waiting on this rank there fail at once.
    /// The default does nothing: the engine aborts its transport itself.
    fn abort(&self, _reason: &str) {}
}

/// Ring, chain, pairwise and dissemination algorithms over a [`Transport`].
///
/// Holds a scratch buffer that grows to the largest size needed and is reused across calls, so
/// steady-state collectives allocate nothing large.
pub struct Ring<T: Transport + ?Sized> {
    transport: Arc<T>,
    segment_bytes: usize,
    small_bytes: usize,
    scratch: Mutex<Vec<u8>>,
}

impl<T: Transport + ?Sized> Ring<T> {
    /// Runs collectives over `transport` with the default segment size.
    pub fn new(transport: Arc<T>) -> Self {
        Self {
            transport,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            small_bytes: DEFAULT_SMALL_ALLREDUCE_BYTES,
            scratch: Mutex::new(Vec::new()),
        }
    }

    /// Sets the largest message of a pipelined step (at least one element is always sent).
    /// Every rank must use the same value.
    pub fn with_segment_bytes(mut self, n: usize) -> Self {
        self.segment_bytes = n.max(1);
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
        self.segment_bytes
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
            .field("segment_bytes", &self.segment_bytes)
            .finish_non_exhaustive()
    }
}

impl<T: Transport + ?Sized> Collectives for Ring<T> {
    fn rank(&self) -> usize {
        self.transport.rank()
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
    ) -> Result<(), TransportError> {
        let tag = Tag::new(kind::ALLREDUCE, seq);
        if self.size() > 1
            && buf.len() <= self.small_bytes
            && buf.len().is_multiple_of(dtype.size())
        {
            return allreduce_small::allreduce(self, buf, dtype, op, tag, deadline);
        }
        allreduce_ring::allreduce(self, buf, dtype, op, tag, deadline)
    }

    fn allgatherv(
        &self,
        input: &[u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        seq: u64,
        deadline: Instant,
    ) -> Result<(), TransportError> {
        let tag = Tag::new(kind::ALLGATHER, seq);
        allgather_ring::allgatherv(self, input, output, bytes_per_rank, tag, deadline)
    }

    fn broadcast(
        &self,
        buf: &mut [u8],
        root: usize,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), TransportError> {
        broadcast::broadcast(self, buf, root, Tag::new(kind::BROADCAST, seq), deadline)
    }

    fn alltoallv(
        &self,
        input: &[u8],
        send_bytes: &[usize],
        output: &mut [u8],
        recv_bytes: &[usize],
        seq: u64,
        deadline: Instant,
    ) -> Result<(), TransportError> {
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

    fn reducescatter(
        &self,
        input: &mut [u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), TransportError> {
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

    fn barrier(&self, seq: u64, deadline: Instant) -> Result<(), TransportError> {
        barrier::barrier(&*self.transport, Tag::new(kind::BARRIER, seq), deadline)
    }

    fn abort(&self, reason: &str) {
        self.transport.abort(reason);
    }
}

/// The error for arguments that cannot be right (lengths that disagree, a root out of range).
///
/// `TransportError` has no variant for caller mistakes, so this borrows `Protocol` naming this
/// rank; the detail says what was wrong.
fn invalid(me: Rank, detail: impl fmt::Display) -> TransportError {
    TransportError::Protocol {
        peer: me,
        detail: format!("invalid collective arguments: {detail}"),
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
