//! Collectives for ranks that all share one host: everything but alltoall through shared
//! memory (`hora_shm`); alltoall through the ring's pairwise exchange over the job's transport.
//!
//! How it works. [`hora_shm::ShmGroup`] knows nothing of dtypes; its reducing collectives are
//! handed a combining function built from this crate's reduction kernels. Alltoall keeps the
//! pairwise exchange until it gets a shared-memory version of its own.

use std::sync::Arc;
use std::time::Instant;

use hora_shm::ShmGroup;
use hora_transport::{Transport, TransportError};

use super::{Collectives, Ring, invalid};
use crate::reduce;
use crate::types::{DataType, ReduceOp};

/// Shared-memory collectives, with the ring's pairwise exchange for alltoall.
#[derive(Debug)]
pub struct ShmCollectives {
    group: Arc<ShmGroup>,
    ring: Ring<dyn Transport>,
}

impl ShmCollectives {
    /// Combines a connected group with the ring used for the other collectives; both must
    /// span the same ranks.
    pub fn new(group: Arc<ShmGroup>, ring: Ring<dyn Transport>) -> Self {
        Self { group, ring }
    }

    /// Builds the ring over `transport` with `segment_bytes` segments.
    pub fn with_transport(
        group: Arc<ShmGroup>,
        transport: Arc<dyn Transport>,
        segment_bytes: usize,
    ) -> Self {
        Self::new(
            group,
            Ring::new(transport).with_segment_bytes(segment_bytes),
        )
    }
}

impl Collectives for ShmCollectives {
    fn rank(&self) -> usize {
        self.group.rank()
    }

    fn size(&self) -> usize {
        self.group.size()
    }

    fn allreduce(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        _seq: u64,
        deadline: Instant,
    ) -> Result<(), TransportError> {
        let mut failed = None;
        let mut combine = |dst: &mut [u8], src: &[u8]| {
            if let Err(e) = reduce::reduce_into(dst, src, dtype, op) {
                failed.get_or_insert(e);
            }
        };
        self.group
            .allreduce(buf, dtype.size(), &mut combine, deadline)?;
        match failed {
            // Cannot happen (the group hands out equal, whole-element slices), but if it did
            // the result would be wrong, so say so.
            Some(e) => Err(invalid(self.rank(), e)),
            None => Ok(()),
        }
    }

    fn allgatherv(
        &self,
        input: &[u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        _seq: u64,
        deadline: Instant,
    ) -> Result<(), TransportError> {
        self.group
            .allgatherv(input, output, bytes_per_rank, deadline)
    }

    fn broadcast(
        &self,
        buf: &mut [u8],
        root: usize,
        _seq: u64,
        deadline: Instant,
    ) -> Result<(), TransportError> {
        self.group.broadcast(buf, root, deadline)
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
        self.ring
            .alltoallv(input, send_bytes, output, recv_bytes, seq, deadline)
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
    ) -> Result<(), TransportError> {
        let mut failed = None;
        let mut combine = |dst: &mut [u8], src: &[u8]| {
            if let Err(e) = reduce::reduce_into(dst, src, dtype, op) {
                failed.get_or_insert(e);
            }
        };
        self.group.reducescatter(
            input,
            output,
            bytes_per_rank,
            dtype.size(),
            &mut combine,
            deadline,
        )?;
        match failed {
            Some(e) => Err(invalid(self.rank(), e)),
            None => Ok(()),
        }
    }

    fn barrier(&self, _seq: u64, deadline: Instant) -> Result<(), TransportError> {
        self.group.barrier(deadline)
    }

    fn abort(&self, reason: &str) {
        self.group.abort(reason);
    }
}
