//! The engine: one background thread per process that negotiates, fuses and runs collectives.
//!
//! # Design overview
//!
//! [`Engine::submit`] checks an [`Op`] against the job, hands it and the caller's tensor to the
//! background thread and returns a [`Handle`] at once. The rooms, each owning its state:
//!
//! * `queue.rs`: the tensor queue, from submit until the handle completes (in-flight names,
//!   shutdown, the dead engine's error, entries waiting for their response).
//! * `background.rs`: the IO shell, and the only room that talks to other ranks about control:
//!   queue → worker/coordinator → control messages → executor → complete handles; failures and
//!   their root causes are decided here.
//! * `executor.rs`: runs one resolved response over its collectives and returns what each
//!   entry completes with; it knows nothing of the coordinator, the queue or control traffic.
//! * `fusion_buffer.rs`: the executor's reused buffer for fused tensors.
//! * `op.rs`: the public builder every face describes an operation with.
//!
//! The executor takes its rank and size from its collectives and holds no process-wide state,
//! so a second process set, or a device (GPU) executor, is another `Executor` instance with its
//! own collectives and fusion buffer, driven by the same shell, not a branch inside it.
//!
//! The background thread is event-driven: it sends newly ready requests to the coordinator as
//! soon as they arrive, executes each plan the coordinator broadcasts, in the same order on
//! every rank, and completes the handles.

mod background;
mod executor;
mod fusion_buffer;
mod op;
mod queue;

use std::sync::Arc;
use std::thread::JoinHandle;

use hora_transport::{AdaptiveSpin, Transport};
use parking_lot::Mutex;

use crate::collectives::{Collectives, Ring};
use crate::config::{Topology, Tuning};
use crate::error::{Error, Result};
use crate::handle::{Handle, TensorData};
use crate::process_set::{ProcessSet, SetView};
use crate::types::{DataType, ReduceOp};

pub use op::{Op, OpOptions};

/// A running hora engine for one rank.
pub struct Engine {
    topology: Topology,
    queue: queue::Submitter,
    thread: Mutex<Option<JoinHandle<()>>>,
    barrier_seq: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("topology", &self.topology)
            .finish()
    }
}

impl Engine {
    /// Starts the background thread over an existing transport (whose rank and size must match
    /// `topology`).
    pub fn start(
        topology: Topology,
        tuning: Tuning,
        transport: Arc<dyn Transport>,
    ) -> Result<Self> {
        Self::start_with(topology, tuning, transport, None)
    }

    /// Like [`Engine::start`], running data collectives on `collectives` when given (a native
    /// backend such as shared memory) instead of the ring over `transport`; control traffic
    /// always uses `transport`.
    pub fn start_with(
        topology: Topology,
        tuning: Tuning,
        transport: Arc<dyn Transport>,
        collectives: Option<Box<dyn Collectives>>,
    ) -> Result<Self> {
        Self::start_inner(topology, tuning, transport, collectives, None)
    }

    /// The engine of a process set: `topology` numbers the set's members `0..n`, and every
    /// error its handles complete with names global ranks and the set.
    pub(crate) fn start_in_set(
        topology: Topology,
        tuning: Tuning,
        transport: Arc<dyn Transport>,
        collectives: Box<dyn Collectives>,
        set: &ProcessSet,
    ) -> Result<Self> {
        let view = SetView::new(set);
        // Autotune tunes the job's own engine; a set's engine keeps the configured values.
        let tuning = Tuning {
            autotune: None,
            ..tuning
        };
        Self::start_inner(topology, tuning, transport, Some(collectives), Some(view))
            .map_err(|e| SetView::new(set).renumber(e))
    }

    fn start_inner(
        topology: Topology,
        tuning: Tuning,
        transport: Arc<dyn Transport>,
        collectives: Option<Box<dyn Collectives>>,
        view: Option<SetView>,
    ) -> Result<Self> {
        if transport.rank() != topology.rank || transport.size() != topology.size {
            return Err(Error::Bug(format!(
                "transport is rank {}/{} but the topology says {}/{}",
                transport.rank(),
                transport.size(),
                topology.rank,
                topology.size
            )));
        }
        let (submitter, queue) = queue::new(
            topology.rank,
            transport.waker(),
            Arc::new(AdaptiveSpin::yielding(tuning.spin)),
            view,
        );
        let collectives: Box<dyn Collectives> = match collectives {
            Some(c) => c,
            None => Box::new(Ring::new(transport.clone()).with_segment_bytes(tuning.segment_bytes)),
        };
        if collectives.rank() != topology.rank || collectives.size() != topology.size {
            return Err(Error::Bug(format!(
                "collectives are rank {}/{} but the topology says {}/{}",
                collectives.rank(),
                collectives.size(),
                topology.rank,
                topology.size
            )));
        }
        let bg = background::Background::new(topology, tuning, transport, collectives, queue);
        let thread = std::thread::Builder::new()
            .name(format!("hora-engine-{}", topology.rank))
            .spawn(move || bg.run())
            .map_err(|e| Error::Bug(format!("cannot start the engine thread: {e}")))?;
        Ok(Self {
            topology,
            queue: submitter,
            thread: Mutex::new(Some(thread)),
            barrier_seq: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// This rank's place in the job.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Submits one operation with the caller's tensor (none for barrier and join) and returns
    /// its handle at once; the tensor comes back in the completion. The form every other call
    /// uses. An op that does not fit the job or the buffer gives a handle that has failed.
    pub fn submit(&self, op: Op, data: Option<Box<dyn TensorData>>) -> Handle {
        let lent = data.as_ref().map(|d| d.bytes().len());
        if let Err(err) = op.check(self.topology.rank, self.topology.size, lent) {
            return self.queue.refuse(op.name(), err);
        }
        self.queue.push(op.req, data)
    }

    /// Submits several operations as one group (Horovod's grouped operations): the coordinator
    /// answers them together, once every member is ready on every rank, and fuses the group's
    /// allreduces like one tensor list; every rank must group the same names. Returns one
    /// handle per op, in order. When any op does not fit the job or its buffer, nothing is
    /// queued and every handle fails with that op's error. An empty list gives no handles.
    pub fn submit_group(&self, ops: Vec<(Op, Option<Box<dyn TensorData>>)>) -> Vec<Handle> {
        let (rank, size) = (self.topology.rank, self.topology.size);
        let bad = ops.iter().find_map(|(op, data)| {
            let lent = data.as_ref().map(|d| d.bytes().len());
            let join =
                (op.kind() == crate::types::CollectiveKind::Join).then(|| Error::InvalidArgument {
                    rank,
                    tensor: op.name().to_string(),
                    detail: "join cannot be part of a group".to_string(),
                });
            join.or_else(|| op.check(rank, size, lent).err())
        });
        if let Some(err) = bad {
            return ops
                .iter()
                .map(|(op, _)| self.queue.refuse(op.name(), err.clone()))
                .collect();
        }
        if ops.is_empty() {
            return Vec::new();
        }
        self.queue
            .push_group(ops.into_iter().map(|(op, data)| (op.req, data)).collect())
    }

    /// Starts an allreduce of `data` (any [`TensorData`]) and returns its handle.
    pub fn allreduce_async(
        &self,
        name: &str,
        dtype: DataType,
        shape: &[u64],
        data: Box<dyn TensorData>,
        op: ReduceOp,
        opts: OpOptions,
    ) -> Handle {
        let op = Op::allreduce(name, dtype, shape)
            .reduce_op(op)
            .options(opts);
        self.submit(op, Some(data))
    }

    /// Starts an allgather (rank-dependent first dimension allowed).
    pub fn allgather_async(
        &self,
        name: &str,
        dtype: DataType,
        shape: &[u64],
        data: Box<dyn TensorData>,
    ) -> Handle {
        self.submit(Op::allgather(name, dtype, shape), Some(data))
    }

    /// Starts a broadcast from `root` (in place).
    pub fn broadcast_async(
        &self,
        name: &str,
        dtype: DataType,
        shape: &[u64],
        data: Box<dyn TensorData>,
        root: usize,
    ) -> Handle {
        self.submit(Op::broadcast(name, dtype, shape, root), Some(data))
    }

    /// Starts an alltoall; `splits[d]` rows of dim 0 go to rank `d` (empty = even split).
    pub fn alltoall_async(
        &self,
        name: &str,
        dtype: DataType,
        shape: &[u64],
        data: Box<dyn TensorData>,
        splits: Vec<u64>,
    ) -> Handle {
        self.submit(Op::alltoall(name, dtype, shape).splits(splits), Some(data))
    }

    /// Starts a reducescatter: reduce, then rank r keeps its share of dim 0.
    pub fn reducescatter_async(
        &self,
        name: &str,
        dtype: DataType,
        shape: &[u64],
        data: Box<dyn TensorData>,
        op: ReduceOp,
        opts: OpOptions,
    ) -> Handle {
        let op = Op::reducescatter(name, dtype, shape)
            .reduce_op(op)
            .options(opts);
        self.submit(op, Some(data))
    }

    /// Starts writing the timeline to `path` on rank 0 (closing any open one), marking
    /// coordinator rounds when `mark_cycles`; other ranks ignore it, as in Horovod.
    pub fn start_timeline(&self, path: std::path::PathBuf, mark_cycles: bool) {
        self.queue.timeline(Some((path, mark_cycles)));
    }

    /// Stops writing the timeline (closing the file); a no-op when none is open.
    pub fn stop_timeline(&self) {
        self.queue.timeline(None);
    }

    /// How many operations this rank submitted that have not completed yet.
    pub fn in_flight(&self) -> usize {
        self.queue.in_flight()
    }

    /// Blocks until every rank calls barrier.
    pub fn barrier(&self) -> Result<()> {
        let n = self
            .barrier_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let op = Op::barrier(format!("barrier.{n}"));
        self.submit(op, None).wait().map(|_| ())
    }

    /// Declares that this rank has no more work: it takes part in other ranks' collectives with
    /// neutral input until every rank has joined. Returns the last rank to join.
    pub fn join(&self) -> Result<usize> {
        let c = self.submit(Op::join(), None).wait()?;
        c.last_joined
            .ok_or_else(|| Error::Bug("join completed without a last rank".into()))
    }

    /// Stops the engine: pending operations fail with `ShutDown` on every rank.
    /// Waits for the background thread to finish.
    pub fn shutdown(&self) {
        self.queue.shutdown();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
