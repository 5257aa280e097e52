//! The engine: one background thread per process that negotiates, fuses and runs collectives.
//!
//! `enqueue` hands a request and the caller's tensor to the background thread and returns a
//! [`Handle`] at once. The background thread (see `background.rs`) is event-driven: it sends
//! newly ready requests to the coordinator as soon as they arrive, executes each plan the
//! coordinator broadcasts, in the same order on every rank, and completes the handles.

mod background;
mod executor;

use std::sync::Arc;
use std::thread::JoinHandle;

use hora_transport::{AdaptiveSpin, Transport, Waker};
use parking_lot::Mutex;

use crate::collectives::{Collectives, Ring};
use crate::config::{Topology, Tuning};
use crate::coordinator::Request;
use crate::error::{Error, Result};
use crate::fasthash::FastSet;
use crate::handle::{Handle, HandleState, TensorData};
use crate::types::{CollectiveKind, DataType, ReduceOp};

/// One submitted operation waiting for the coordinator's go.
pub(crate) struct Entry {
    pub(crate) req: Request,
    pub(crate) data: Option<Box<dyn TensorData>>,
    pub(crate) handle: Arc<HandleState>,
}

#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) new: Vec<Entry>,
    pub(crate) in_flight: FastSet<String>,
    pub(crate) shutdown: bool,
    /// Set once the background thread has stopped; later calls fail with it.
    pub(crate) dead: Option<Error>,
}

pub(crate) struct Shared {
    pub(crate) inbox: Mutex<Inbox>,
    pub(crate) waker: Waker,
    /// Spin budget of callers waiting on handles, shared by all of this rank's handles.
    pub(crate) spin: Arc<AdaptiveSpin>,
}

/// Options of one operation beyond its name and data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpOptions {
    /// Multiply the input by this before reducing.
    pub prescale: f64,
    /// Multiply the result by this after reducing.
    pub postscale: f64,
}

impl Default for OpOptions {
    fn default() -> Self {
        Self {
            prescale: 1.0,
            postscale: 1.0,
        }
    }
}

/// A running hora engine for one rank.
pub struct Engine {
    topology: Topology,
    shared: Arc<Shared>,
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
        if transport.rank() != topology.rank || transport.size() != topology.size {
            return Err(Error::Bug(format!(
                "transport is rank {}/{} but the topology says {}/{}",
                transport.rank(),
                transport.size(),
                topology.rank,
                topology.size
            )));
        }
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox::default()),
            waker: transport.waker(),
            spin: Arc::new(AdaptiveSpin::yielding(tuning.spin)),
        });
        let collectives: Box<dyn Collectives> = match collectives {
            Some(c) => c,
            None => Box::new(Ring::new(transport.clone()).with_segment_bytes(tuning.segment_bytes)),
        };
        let bg =
            background::Background::new(topology, tuning, transport, collectives, shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("hora-engine-{}", topology.rank))
            .spawn(move || bg.run())
            .map_err(|e| Error::Bug(format!("cannot start the engine thread: {e}")))?;
        Ok(Self {
            topology,
            shared,
            thread: Mutex::new(Some(thread)),
            barrier_seq: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// This rank's place in the job.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Submits one operation; returns at once. The low-level form every other call uses.
    pub fn enqueue(&self, req: Request, data: Option<Box<dyn TensorData>>) -> Handle {
        let rank = self.topology.rank;
        if let Some(d) = &data {
            let expected = req.shape.iter().product::<u64>() as usize * req.dtype.size();
            if d.bytes().len() != expected {
                return Handle::failed(
                    &req.name,
                    Error::InvalidArgument {
                        rank,
                        tensor: req.name.clone(),
                        detail: format!(
                            "buffer is {} bytes but shape {:?} of {} needs {expected}",
                            d.bytes().len(),
                            req.shape,
                            req.dtype
                        ),
                    },
                );
            }
        }
        if req.kind == CollectiveKind::Broadcast && req.root as usize >= self.topology.size {
            return Handle::failed(
                &req.name,
                Error::InvalidArgument {
                    rank,
                    tensor: req.name.clone(),
                    detail: format!(
                        "broadcast root {} is not a rank of this job (size {})",
                        req.root, self.topology.size
                    ),
                },
            );
        }
        if req.kind == CollectiveKind::Alltoall && !req.splits.is_empty() {
            let rows = req.shape.first().copied().unwrap_or(0);
            if req.splits.len() != self.topology.size || req.splits.iter().sum::<u64>() != rows {
                return Handle::failed(
                    &req.name,
                    Error::InvalidArgument {
                        rank,
                        tensor: req.name.clone(),
                        detail: format!(
                            "alltoall splits {:?} must have one entry per rank ({}) summing to dim 0 ({rows})",
                            req.splits, self.topology.size
                        ),
                    },
                );
            }
        }
        let state = HandleState::new(req.name.clone(), self.shared.spin.clone());
        let handle = Handle::new(state.clone());
        {
            let mut inbox = self.shared.inbox.lock();
            if let Some(err) = &inbox.dead {
                state.complete(Err(err.clone()));
                return handle;
            }
            if inbox.shutdown {
                state.complete(Err(Error::ShutDown { rank, reason: None }));
                return handle;
            }
            if !inbox.in_flight.insert(req.name.clone()) {
                state.complete(Err(Error::InvalidArgument {
                    rank,
                    tensor: req.name.clone(),
                    detail: "an operation with this name is already in flight on this rank; \
                             names must be unique until their handle completes"
                        .to_string(),
                }));
                return handle;
            }
            inbox.new.push(Entry {
                req,
                data,
                handle: state,
            });
        }
        self.shared.waker.wake();
        handle
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
        self.enqueue(
            request(name, CollectiveKind::Allreduce, dtype, shape, op, 0, opts),
            Some(data),
        )
    }

    /// Starts an allgather (rank-dependent first dimension allowed).
    pub fn allgather_async(
        &self,
        name: &str,
        dtype: DataType,
        shape: &[u64],
        data: Box<dyn TensorData>,
    ) -> Handle {
        let req = request(
            name,
            CollectiveKind::Allgather,
            dtype,
            shape,
            ReduceOp::Sum,
            0,
            OpOptions::default(),
        );
        self.enqueue(req, Some(data))
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
        let req = request(
            name,
            CollectiveKind::Broadcast,
            dtype,
            shape,
            ReduceOp::Sum,
            root as u32,
            OpOptions::default(),
        );
        self.enqueue(req, Some(data))
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
        let mut req = request(
            name,
            CollectiveKind::Alltoall,
            dtype,
            shape,
            ReduceOp::Sum,
            0,
            OpOptions::default(),
        );
        req.splits = splits;
        self.enqueue(req, Some(data))
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
        self.enqueue(
            request(
                name,
                CollectiveKind::Reducescatter,
                dtype,
                shape,
                op,
                0,
                opts,
            ),
            Some(data),
        )
    }

    /// Blocks until every rank calls barrier.
    pub fn barrier(&self) -> Result<()> {
        let n = self
            .barrier_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req = request(
            &format!("barrier.{n}"),
            CollectiveKind::Barrier,
            DataType::U8,
            &[0],
            ReduceOp::Sum,
            0,
            OpOptions::default(),
        );
        self.enqueue(req, None).wait().map(|_| ())
    }

    /// Declares that this rank has no more work: it takes part in other ranks' collectives with
    /// neutral input until every rank has joined. Returns the last rank to join.
    pub fn join(&self) -> Result<usize> {
        let req = request(
            "join",
            CollectiveKind::Join,
            DataType::U8,
            &[0],
            ReduceOp::Sum,
            0,
            OpOptions::default(),
        );
        let c = self.enqueue(req, None).wait()?;
        c.last_joined
            .ok_or_else(|| Error::Bug("join completed without a last rank".into()))
    }

    /// Stops the engine: pending operations fail with `ShutDown` on every rank.
    /// Waits for the background thread to finish.
    pub fn shutdown(&self) {
        self.shared.inbox.lock().shutdown = true;
        self.shared.waker.wake();
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

/// Builds a request with the common fields.
pub fn request(
    name: &str,
    kind: CollectiveKind,
    dtype: DataType,
    shape: &[u64],
    op: ReduceOp,
    root: u32,
    opts: OpOptions,
) -> Request {
    Request {
        name: name.to_string(),
        kind,
        dtype,
        shape: shape.to_vec(),
        op,
        root,
        prescale: opts.prescale,
        postscale: opts.postscale,
        splits: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
