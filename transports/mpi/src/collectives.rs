//! MPI's own blocking collectives as a native backend: what MPI reduces natively (no f16 or
//! bf16 in MPI, u8 min/max not on MPICH) and what fits its C-int counts; [`Collectives::runs`]
//! says no to the rest, which hora's dispatch wrapper runs on its ring over the same
//! [`MpiTransport`].
//!
//! How it works. The MPI library picks its algorithm per size and network (shared memory on
//! one host), which is what an MPI user already gets, so allreduce, broadcast, allgatherv,
//! alltoallv, reducescatter and barrier go straight to `MPI_Allreduce` (in place),
//! `MPI_Bcast`, ... on a communicator of their own. MPI's blocking calls cannot be
//! interrupted, so they do not honour deadlines; a dead rank makes `mpirun` end the job.

use std::sync::Arc;
use std::time::Instant;

use hora_transport::{Call, CollectiveError, Collectives, DataType, ReduceOp, Transport};

use crate::{Comm, MpiOp, MpiTransport, MpiType};

/// MPI's native collectives over a transport's collective communicator.
#[derive(Debug)]
pub struct MpiCollectives {
    mpi: Arc<MpiTransport>,
}

impl MpiCollectives {
    /// Collectives on `transport`'s collective communicator.
    pub fn new(transport: Arc<MpiTransport>) -> Self {
        Self { mpi: transport }
    }

    fn comm(&self) -> &Comm {
        self.mpi.collectives_comm()
    }
}

/// MPI's element type and reduction for `dtype` and `op`, when MPI reduces them correctly
/// (no half precision in MPI, no Adasum; see `Comm::reduces_natively`).
fn native(dtype: DataType, op: ReduceOp) -> Option<(MpiType, MpiOp)> {
    let t = mpi_type(dtype)?;
    let o = mpi_op(op)?;
    Comm::reduces_natively(t, o).then_some((t, o))
}

/// MPI's element type for `dtype`, when it has one (no half precision in MPI).
fn mpi_type(dtype: DataType) -> Option<MpiType> {
    match dtype {
        DataType::U8 => Some(MpiType::U8),
        DataType::I8 => Some(MpiType::I8),
        DataType::I32 => Some(MpiType::I32),
        DataType::I64 => Some(MpiType::I64),
        DataType::F32 => Some(MpiType::F32),
        DataType::F64 => Some(MpiType::F64),
        _ => None,
    }
}

/// MPI's reduction for `op`; Average is summed and scaled by the engine. Adasum has none: it
/// is not element-wise, so it runs on hora's own algorithm over MPI point-to-point.
fn mpi_op(op: ReduceOp) -> Option<MpiOp> {
    match op {
        ReduceOp::Sum | ReduceOp::Average => Some(MpiOp::Sum),
        ReduceOp::Min => Some(MpiOp::Min),
        ReduceOp::Max => Some(MpiOp::Max),
        ReduceOp::Product => Some(MpiOp::Prod),
        ReduceOp::Adasum => None,
    }
}

/// MPI counts are C ints.
fn fits(bytes: usize) -> bool {
    bytes <= i32::MAX as usize
}

/// What a direct call of a collective MPI does not run natively says.
fn not_native(what: &str) -> CollectiveError {
    CollectiveError::invalid(format_args!(
        "MPI has no native {what}: run it behind hora's dispatch wrapper, which uses the ring"
    ))
}

impl Collectives for MpiCollectives {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }

    fn size(&self) -> usize {
        self.mpi.size()
    }

    fn runs(&self, call: &Call) -> bool {
        match *call {
            Call::Allreduce { dtype, op, .. } => native(dtype, op).is_some(),
            Call::Allgatherv { output } => fits(output),
            Call::Alltoallv { input, output } => fits(input) && fits(output),
            Call::Reducescatter { bytes, dtype, op } => {
                native(dtype, op).is_some() && fits(bytes / dtype.size())
            }
            Call::Broadcast { .. } | Call::Barrier => true,
            // A call this crate does not know yet runs on hora's ring.
            _ => false,
        }
    }

    fn allreduce(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        _seq: u64,
        _deadline: Instant,
    ) -> Result<(), CollectiveError> {
        let (t, o) = native(dtype, op).ok_or_else(|| not_native("allreduce of this dtype/op"))?;
        Ok(self.comm().allreduce(buf, t, o)?)
    }

    fn allgatherv(
        &self,
        input: &[u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        _seq: u64,
        _deadline: Instant,
    ) -> Result<(), CollectiveError> {
        if !fits(output.len()) {
            return Err(not_native("allgather past 2^31 bytes"));
        }
        Ok(self.comm().allgatherv(input, output, bytes_per_rank)?)
    }

    fn broadcast(
        &self,
        buf: &mut [u8],
        root: usize,
        _seq: u64,
        _deadline: Instant,
    ) -> Result<(), CollectiveError> {
        Ok(self.comm().broadcast(buf, root)?)
    }

    fn alltoallv(
        &self,
        input: &[u8],
        send_bytes: &[usize],
        output: &mut [u8],
        recv_bytes: &[usize],
        _seq: u64,
        _deadline: Instant,
    ) -> Result<(), CollectiveError> {
        if !(fits(input.len()) && fits(output.len())) {
            return Err(not_native("alltoall past 2^31 bytes"));
        }
        Ok(self
            .comm()
            .alltoallv(input, send_bytes, output, recv_bytes)?)
    }

    fn reducescatter(
        &self,
        input: &mut [u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        dtype: DataType,
        op: ReduceOp,
        _seq: u64,
        _deadline: Instant,
    ) -> Result<(), CollectiveError> {
        let esize = dtype.size();
        let (t, o) = native(dtype, op)
            .filter(|_| fits(input.len() / esize))
            .ok_or_else(|| not_native("reducescatter of this dtype/op/size"))?;
        let counts: Vec<usize> = bytes_per_rank.iter().map(|b| b / esize).collect();
        Ok(self.comm().reduce_scatter(input, output, &counts, t, o)?)
    }

    fn barrier(&self, _seq: u64, _deadline: Instant) -> Result<(), CollectiveError> {
        Ok(self.comm().barrier()?)
    }
}
