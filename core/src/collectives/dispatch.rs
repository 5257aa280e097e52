//! The one wrapper in front of every native backend: it checks a call's arguments once, asks
//! the backend whether it runs the call ([`Collectives::runs`]), and runs it there or on
//! hora's ring over the job's transport.
//!
//! Why a wrapper and not a default method: a native backend (shared memory, MPI, the
//! hierarchical composition, later NCCL) is good at some calls and lacks others (alltoall in
//! shared memory, f16 in MPI, sizes past MPI's C-int counts); every such backend used to carry
//! its own copy of the argument checks and of the fallback. Here they are written once, and a
//! backend implements only what it does well.

use std::fmt;
use std::time::Instant;

use hora_transport::{Call, CollectiveError, Collectives, Transport};

use super::{Ring, check};
use crate::types::{DataType, ReduceOp};

/// A native backend `N` with hora's ring as the fallback for the calls it does not run.
pub struct Dispatch<N: ?Sized = dyn Collectives> {
    ring: Ring<dyn Transport>,
    native: Box<N>,
}

impl<N: Collectives + ?Sized> Dispatch<N> {
    /// Puts `native` in front of `ring`; both must span the same ranks, numbered alike.
    pub fn new(native: Box<N>, ring: Ring<dyn Transport>) -> Self {
        debug_assert_eq!((native.rank(), native.size()), (ring.rank(), ring.size()));
        Self { ring, native }
    }

    /// The native backend.
    pub fn native(&self) -> &N {
        &self.native
    }

    /// The fallback ring.
    pub fn ring(&self) -> &Ring<dyn Transport> {
        &self.ring
    }
}

impl<N: Collectives + ?Sized> fmt::Debug for Dispatch<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatch")
            .field("native", &&*self.native)
            .field("ring", &self.ring)
            .finish()
    }
}

impl<N: Collectives + ?Sized> Collectives for Dispatch<N> {
    fn rank(&self) -> usize {
        self.ring.rank()
    }

    /// The fallback ring takes the size; what the main calls read is the native backend's.
    fn set_segment_bytes(&self, n: usize) -> bool {
        self.ring.set_segment_bytes(n);
        self.native.set_segment_bytes(n)
    }

    fn size(&self) -> usize {
        self.ring.size()
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
        let call = Call::Allreduce {
            bytes: buf.len(),
            dtype,
            op,
        };
        if self.native.runs(&call) {
            self.native.allreduce(buf, dtype, op, seq, deadline)
        } else {
            self.ring.run_allreduce(buf, dtype, op, seq, deadline)
        }
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
        let call = Call::Allgatherv {
            output: output.len(),
        };
        if self.native.runs(&call) {
            self.native
                .allgatherv(input, output, bytes_per_rank, seq, deadline)
        } else {
            self.ring
                .run_allgatherv(input, output, bytes_per_rank, seq, deadline)
        }
    }

    fn broadcast(
        &self,
        buf: &mut [u8],
        root: usize,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        check::broadcast(self.size(), root)?;
        if self.native.runs(&Call::Broadcast { bytes: buf.len() }) {
            self.native.broadcast(buf, root, seq, deadline)
        } else {
            self.ring.run_broadcast(buf, root, seq, deadline)
        }
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
        let call = Call::Alltoallv {
            input: input.len(),
            output: output.len(),
        };
        if self.native.runs(&call) {
            self.native
                .alltoallv(input, send_bytes, output, recv_bytes, seq, deadline)
        } else {
            self.ring
                .run_alltoallv(input, send_bytes, output, recv_bytes, seq, deadline)
        }
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
        let call = Call::Reducescatter {
            bytes: input.len(),
            dtype,
            op,
        };
        if self.native.runs(&call) {
            self.native
                .reducescatter(input, output, bytes_per_rank, dtype, op, seq, deadline)
        } else {
            self.ring
                .run_reducescatter(input, output, bytes_per_rank, dtype, op, seq, deadline)
        }
    }

    fn barrier(&self, seq: u64, deadline: Instant) -> Result<(), CollectiveError> {
        if self.native.runs(&Call::Barrier) {
            self.native.barrier(seq, deadline)
        } else {
            self.ring.run_barrier(seq, deadline)
        }
    }

    fn abort(&self, reason: &str) {
        // The ring runs over the engine's transport, which the engine aborts itself.
        self.native.abort(reason);
    }
}
