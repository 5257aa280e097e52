//! Collectives of a job started by `mpirun`: MPI's own blocking collectives where MPI has the
//! dtype and op natively, hora's ring over the MPI transport where it has not (f16, bf16, u8
//! min/max on MPICH, and sizes beyond MPI's C-int counts).
//!
//! How it works. The MPI library picks its algorithm per size and network (shared memory on
//! one host), which is what an MPI user already gets, so allreduce, broadcast, allgatherv,
//! alltoallv, reducescatter and barrier go straight to `MPI_Allreduce` (in place),
//! `MPI_Bcast`, ... on a communicator of their own. MPI's blocking calls cannot be
//! interrupted, so they do not honour deadlines; a dead rank makes `mpirun` end the job. The
//! ring fallback runs over the same `MpiTransport` and keeps every deadline.

use std::sync::Arc;
use std::time::Instant;

use hora_mpi::{Comm, MpiOp, MpiTransport, MpiType};
use hora_transport::{Transport, TransportError};

use super::{Collectives, Ring};
use crate::types::{DataType, ReduceOp};

/// MPI's native collectives, with hora's ring for what MPI lacks.
#[derive(Debug)]
pub struct MpiCollectives {
    mpi: Arc<MpiTransport>,
    ring: Ring<dyn Transport>,
}

impl MpiCollectives {
    /// Collectives on `transport`'s collective communicator; the ring fallback uses
    /// `segment_bytes` segments.
    pub fn new(transport: Arc<MpiTransport>, segment_bytes: usize) -> Self {
        let dyn_t: Arc<dyn Transport> = transport.clone();
        Self {
            mpi: transport,
            ring: Ring::new(dyn_t).with_segment_bytes(segment_bytes),
        }
    }
}

/// MPI's element type and reduction for `dtype` and `op`, when MPI reduces them correctly
/// (no half precision in MPI; see `Comm::reduces_natively`).
fn native(dtype: DataType, op: ReduceOp) -> Option<(MpiType, MpiOp)> {
    let t = mpi_type(dtype)?;
    let o = mpi_op(op);
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

/// MPI's reduction for `op`; Average is summed and scaled by the engine.
fn mpi_op(op: ReduceOp) -> MpiOp {
    match op {
        ReduceOp::Sum | ReduceOp::Average => MpiOp::Sum,
        ReduceOp::Min => MpiOp::Min,
        ReduceOp::Max => MpiOp::Max,
        ReduceOp::Product => MpiOp::Prod,
    }
}

/// MPI counts are C ints.
fn fits(bytes: usize) -> bool {
    bytes <= i32::MAX as usize
}

impl Collectives for MpiCollectives {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }

    fn size(&self) -> usize {
        self.mpi.size()
    }

    fn allreduce(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), TransportError> {
        match native(dtype, op) {
            Some((t, o)) => self.mpi.collectives_comm().allreduce(buf, t, o),
            None => self.ring.allreduce(buf, dtype, op, seq, deadline),
        }
    }

    fn allgatherv(
        &self,
        input: &[u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        seq: u64,
        deadline: Instant,
    ) -> Result<(), TransportError> {
        if fits(output.len()) {
            self.mpi
                .collectives_comm()
                .allgatherv(input, output, bytes_per_rank)
        } else {
            self.ring
                .allgatherv(input, output, bytes_per_rank, seq, deadline)
        }
    }

    fn broadcast(
        &self,
        buf: &mut [u8],
        root: usize,
        _seq: u64,
        _deadline: Instant,
    ) -> Result<(), TransportError> {
        self.mpi.collectives_comm().broadcast(buf, root)
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
        if fits(input.len()) && fits(output.len()) {
            self.mpi
                .collectives_comm()
                .alltoallv(input, send_bytes, output, recv_bytes)
        } else {
            self.ring
                .alltoallv(input, send_bytes, output, recv_bytes, seq, deadline)
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
    ) -> Result<(), TransportError> {
        let esize = dtype.size();
        let native = native(dtype, op)
            .filter(|_| fits(input.len() / esize) && bytes_per_rank.iter().all(|b| b % esize == 0));
        match native {
            Some((t, o)) => {
                let counts: Vec<usize> = bytes_per_rank.iter().map(|b| b / esize).collect();
                self.mpi
                    .collectives_comm()
                    .reduce_scatter(input, output, &counts, t, o)
            }
            None => {
                self.ring
                    .reducescatter(input, output, bytes_per_rank, dtype, op, seq, deadline)
            }
        }
    }

    fn barrier(&self, _seq: u64, _deadline: Instant) -> Result<(), TransportError> {
        self.mpi.collectives_comm().barrier()
    }
}
