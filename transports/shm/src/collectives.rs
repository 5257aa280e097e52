//! [`ShmGroup`] as a native backend: every collective but alltoall through shared memory.
//! Alltoall has no shared-memory version yet, and Adasum is not element-wise (the group reduces
//! with the element-wise kernels), so [`Collectives::runs`] says no to both and hora's
//! dispatch wrapper runs them on its own algorithms over the job's transport.

use std::time::Instant;

use hora_transport::{Call, CollectiveError, Collectives, DataType, Rank, ReduceOp};

use crate::ShmGroup;

impl Collectives for ShmGroup {
    fn rank(&self) -> Rank {
        Self::rank(self)
    }

    fn size(&self) -> usize {
        Self::size(self)
    }

    fn runs(&self, call: &Call) -> bool {
        match call {
            Call::Alltoallv { .. } => false,
            Call::Allreduce { op, .. } | Call::Reducescatter { op, .. } => op.is_elementwise(),
            _ => true,
        }
    }

    fn allreduce(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        _seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        Self::allreduce(self, buf, dtype, op, deadline)
    }

    fn allgatherv(
        &self,
        input: &[u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        _seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        Ok(Self::allgatherv(
            self,
            input,
            output,
            bytes_per_rank,
            deadline,
        )?)
    }

    fn broadcast(
        &self,
        buf: &mut [u8],
        root: usize,
        _seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        Ok(Self::broadcast(self, buf, root, deadline)?)
    }

    fn alltoallv(
        &self,
        _input: &[u8],
        _send_bytes: &[usize],
        _output: &mut [u8],
        _recv_bytes: &[usize],
        _seq: u64,
        _deadline: Instant,
    ) -> Result<(), CollectiveError> {
        Err(CollectiveError::invalid(
            "shared memory has no alltoall of its own: run it behind hora's dispatch \
             wrapper, which uses the ring",
        ))
    }

    fn reducescatter(
        &self,
        input: &mut [u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        dtype: DataType,
        op: ReduceOp,
        _seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        Self::reducescatter(self, input, output, bytes_per_rank, dtype, op, deadline)
    }

    fn barrier(&self, _seq: u64, deadline: Instant) -> Result<(), CollectiveError> {
        Ok(Self::barrier(self, deadline)?)
    }

    fn abort(&self, reason: &str) {
        Self::abort(self, reason);
    }
}
