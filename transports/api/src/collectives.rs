//! The collectives contract: what the engine asks of any backend that runs whole collectives
//! (hora's own algorithms over a [`Transport`](crate::Transport), or a library's native ones
//! such as shared memory, MPI or NCCL), and the error such a call reports.

use std::fmt;
use std::time::Instant;

use crate::{DataType, Rank, ReduceOp, TransportError};

/// Why a collective call failed: the caller's mistake, or moving bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectiveError {
    /// The arguments cannot be right (lengths that disagree, a root out of range, a buffer
    /// that is not whole elements); nothing was sent.
    #[error("invalid collective arguments: {detail}")]
    InvalidArgument {
        /// What was wrong.
        detail: String,
    },
    /// Moving bytes failed (a peer died, a connection broke, a deadline passed).
    #[error("{0}")]
    Transport(#[from] TransportError),
}

impl CollectiveError {
    /// An [`InvalidArgument`](Self::InvalidArgument) saying what was wrong.
    pub fn invalid(detail: impl fmt::Display) -> Self {
        Self::InvalidArgument {
            detail: detail.to_string(),
        }
    }

    /// The peer this error is about, when it is a transport failure about one.
    pub fn peer(&self) -> Option<Rank> {
        match self {
            Self::Transport(e) => e.peer(),
            Self::InvalidArgument { .. } => None,
        }
    }

    /// The transport failure, when it is one.
    pub fn as_transport(&self) -> Option<&TransportError> {
        match self {
            Self::Transport(e) => Some(e),
            Self::InvalidArgument { .. } => None,
        }
    }
}

/// One collective call, described by what a native backend needs to decide whether it runs
/// the call itself (see [`Collectives::runs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// An allreduce of `bytes` bytes.
    Allreduce {
        /// Buffer length.
        bytes: usize,
        /// Element type.
        dtype: DataType,
        /// Reduction.
        op: ReduceOp,
    },
    /// An allgather(v) into `output` bytes.
    Allgatherv {
        /// Total output length.
        output: usize,
    },
    /// A broadcast of `bytes` bytes.
    Broadcast {
        /// Buffer length.
        bytes: usize,
    },
    /// An alltoall(v) of `input` bytes out and `output` bytes in.
    Alltoallv {
        /// Bytes this rank sends in all.
        input: usize,
        /// Bytes this rank receives in all.
        output: usize,
    },
    /// A reducescatter of `bytes` bytes of input.
    Reducescatter {
        /// Input length.
        bytes: usize,
        /// Element type.
        dtype: DataType,
        /// Reduction.
        op: ReduceOp,
    },
    /// A barrier.
    Barrier,
}

/// Whole collectives over some way of moving bytes.
///
/// Every rank calls the same collectives in the same order with the same `seq` (backends that
/// tag messages use it; others ignore it); every wait ends by `deadline` (a backend whose
/// library cannot be interrupted says so in its docs). Argument errors come back as
/// [`CollectiveError::InvalidArgument`] before anything is sent, transport failures as
/// [`CollectiveError::Transport`].
///
/// A native backend need not run every call: [`runs`](Self::runs) says which it does, and
/// `hora`'s dispatch wrapper runs the others on its ring over the job's transport.
pub trait Collectives: Send + Sync + fmt::Debug {
    /// This rank.
    fn rank(&self) -> usize;

    /// Number of ranks.
    fn size(&self) -> usize;

    /// Whether this backend runs `call` itself; the default runs everything. Must give the
    /// same answer on every rank for the same call (it decides which algorithm all run).
    fn runs(&self, _call: &Call) -> bool {
        true
    }

    /// In-place allreduce of `buf` (whole elements of `dtype`). `Average` is summed; the caller
    /// scales.
    fn allreduce(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError>;

    /// Gathers every rank's `input` (rank r contributes `bytes_per_rank[r]` bytes) into
    /// `output` (rank order, length = the sum).
    fn allgatherv(
        &self,
        input: &[u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError>;

    /// Copies `root`'s `buf` into every rank's `buf`.
    fn broadcast(
        &self,
        buf: &mut [u8],
        root: usize,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError>;

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
    ) -> Result<(), CollectiveError>;

    /// Reduces `input` (same length on every rank; used as scratch and clobbered) and leaves
    /// this rank's block in `output`: block r is `bytes_per_rank[r]` bytes (whole elements),
    /// blocks are consecutive in rank order and together cover `input`.
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
    ) -> Result<(), CollectiveError>;

    /// Returns once every rank has entered.
    fn barrier(&self, seq: u64, deadline: Instant) -> Result<(), CollectiveError>;

    /// Fails this rank's current and future collectives on state the backend owns beyond the
    /// engine's transport (shared memory), so peers waiting on this rank there fail at once.
    /// The default does nothing: the engine aborts its transport itself.
    fn abort(&self, _reason: &str) {}

    /// Sets the largest message of a pipelined step from the next call on (autotune; every
    /// rank sets the same value between the same two calls) and says whether this backend's
    /// main calls read it. The default reads no segment size and ignores it.
    fn set_segment_bytes(&self, _n: usize) -> bool {
        false
    }
}

/// A shared backend is a backend: every call goes to the one behind the `Arc`.
impl<C: Collectives + ?Sized> Collectives for std::sync::Arc<C> {
    fn rank(&self) -> usize {
        (**self).rank()
    }

    fn size(&self) -> usize {
        (**self).size()
    }

    fn runs(&self, call: &Call) -> bool {
        (**self).runs(call)
    }

    fn allreduce(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        (**self).allreduce(buf, dtype, op, seq, deadline)
    }

    fn allgatherv(
        &self,
        input: &[u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        (**self).allgatherv(input, output, bytes_per_rank, seq, deadline)
    }

    fn broadcast(
        &self,
        buf: &mut [u8],
        root: usize,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        (**self).broadcast(buf, root, seq, deadline)
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
        (**self).alltoallv(input, send_bytes, output, recv_bytes, seq, deadline)
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
        (**self).reducescatter(input, output, bytes_per_rank, dtype, op, seq, deadline)
    }

    fn barrier(&self, seq: u64, deadline: Instant) -> Result<(), CollectiveError> {
        (**self).barrier(seq, deadline)
    }

    fn abort(&self, reason: &str) {
        (**self).abort(reason);
    }

    fn set_segment_bytes(&self, n: usize) -> bool {
        (**self).set_segment_bytes(n)
    }
}
