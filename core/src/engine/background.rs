//! The engine's IO shell: moves requests to the coordinator and plans back, then runs them.
//!
//! How it works: the loop takes newly enqueued entries, encodes them through the `Worker`
//! (which replaces cached requests by compact ids) and sends them to rank 0 at once — there
//! is no fixed negotiation round, so an idle job answers a single small allreduce in one
//! round trip. Rank 0 feeds every message into the sans-IO `Coordinator`, broadcasts each
//! `DownMsg` it produces to all ranks before running it locally, and every rank runs the
//! resulting plans in order. Waiting happens inside the transport (spin, then sleep in the
//! kernel); `enqueue` interrupts the wait through the transport's waker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hora_transport::{Tag, Transport, TransportError, deadline_after};

use super::{Entry, Shared};
use crate::collectives::Collectives;
use crate::config::{Topology, Tuning};
use crate::coordinator::{Coordinator, CoordinatorConfig, DownMsg, Plan, Worker};
use crate::error::Error;
use crate::fasthash::FastMap;
use crate::timeline::Timeline;
use crate::wire;

/// Control messages to the coordinator.
pub(crate) const TAG_UP: Tag = Tag::new(1, 0);
/// Control messages from the coordinator.
pub(crate) const TAG_DOWN: Tag = Tag::new(2, 0);

/// "This rank is stopping, and why": sent to rank 0 (and by rank 0 to everyone) before a
/// failing engine closes its connections, so survivors report the root cause rather than
/// only "connection lost".
pub(crate) const TAG_ABORT: Tag = Tag::new(3, 0);

/// How long the loop sleeps when nothing happens; events wake it earlier.
const IDLE_TICK: Duration = Duration::from_millis(100);

pub(crate) struct Background {
    pub(super) topology: Topology,
    pub(super) tuning: Tuning,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) collectives: Box<dyn Collectives>,
    pub(super) shared: Arc<Shared>,
    worker: Worker,
    coordinator: Option<Coordinator>,
    /// Submitted entries waiting for their response, by name.
    pub(super) table: FastMap<String, Entry>,
    /// Numbers collectives identically on every rank (tags).
    pub(super) seq: u64,
    /// Reused buffer for fused tensors.
    pub(super) fusion: Vec<u8>,
    sent_shutdown: bool,
    /// Rank 0's Chrome-trace timeline (disabled elsewhere or when not asked for).
    pub(super) timeline: Timeline,
}

enum Flow {
    Continue,
    Stop(Error),
}

impl Background {
    pub(crate) fn new(
        topology: Topology,
        tuning: Tuning,
        transport: Arc<dyn Transport>,
        collectives: Box<dyn Collectives>,
        shared: Arc<Shared>,
    ) -> Self {
        let coordinator = (topology.rank == 0).then(|| {
            Coordinator::new(
                topology.size,
                CoordinatorConfig {
                    fusion_threshold: tuning.fusion_threshold,
                    cache_capacity: tuning.cache_capacity,
                    stall_warning: tuning.stall_warning,
                    stall_shutdown: tuning.stall_shutdown,
                },
            )
        });
        Self {
            worker: Worker::new(topology.rank, topology.size, tuning.cache_capacity),
            coordinator,
            topology,
            tuning,
            transport,
            collectives,
            shared,
            table: FastMap::default(),
            seq: 0,
            fusion: Vec::new(),
            sent_shutdown: false,
            timeline: Timeline::disabled(),
        }
    }

    pub(crate) fn run(mut self) {
        if let (0, Some(path)) = (self.topology.rank, self.tuning.timeline.clone()) {
            match Timeline::create(&path) {
                Ok(t) => self.timeline = t,
                Err(e) => tracing::warn!("HOROVOD_TIMELINE={}: cannot create: {e}", path.display()),
            }
        }
        let reason = loop {
            match self.step() {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop(e)) => break e,
                Err(e) => {
                    tracing::error!(rank = self.topology.rank, "engine stopped: {e}");
                    self.tell_peers(&e);
                    // Close every connection so peers fail fast instead of waiting on us.
                    self.transport.abort(&e.to_string());
                    self.collectives.abort(&e.to_string());
                    break e;
                }
            }
        };
        self.fail_everything(reason);
        self.timeline.finish();
    }

    fn rank(&self) -> usize {
        self.topology.rank
    }

    /// One pass: submit what is new, run what the coordinator decided, then wait for news.
    fn step(&mut self) -> Result<Flow, Error> {
        self.submit_new()?;
        if let Some(flow) = self.drain_coordinator()? {
            return Ok(flow);
        }
        if self.rank() == 0 {
            let deadline = self.next_deadline();
            match self.transport.recv_msg(None, TAG_UP, deadline) {
                Ok(Some((from, bytes))) => {
                    let msg = wire::decode_up(&bytes).map_err(|e| {
                        Error::Bug(format!("undecodable control message from rank {from}: {e}"))
                    })?;
                    let coordinator = self.coordinator.as_mut().expect("rank 0 coordinates");
                    coordinator.handle_message(Instant::now(), from, msg);
                }
                Ok(None) => {}
                Err(TransportError::Timeout { .. }) => {
                    let coordinator = self.coordinator.as_mut().expect("rank 0 coordinates");
                    coordinator.handle_timeout(Instant::now());
                }
                Err(e) => return Err(self.peer_failure(e)),
            }
        } else {
            match self
                .transport
                .recv_msg(Some(0), TAG_DOWN, deadline_after(IDLE_TICK))
            {
                Ok(Some((_, bytes))) => {
                    let msg = wire::decode_down(&bytes).map_err(|e| {
                        Error::Bug(format!("undecodable plan from the coordinator: {e}"))
                    })?;
                    return self.apply(msg);
                }
                Ok(None) | Err(TransportError::Timeout { .. }) => {}
                Err(e) => return Err(self.peer_failure(e)),
            }
        }
        Ok(Flow::Continue)
    }

    fn next_deadline(&self) -> Instant {
        let idle = Instant::now() + IDLE_TICK;
        match self.coordinator.as_ref().and_then(|c| c.poll_timeout()) {
            Some(t) if t < idle => t,
            _ => idle,
        }
    }

    fn peer_failure(&self, e: TransportError) -> Error {
        let mut names: Vec<&str> = self.table.keys().map(|s| s.as_str()).collect();
        names.sort_unstable();
        self.with_root_cause(Error::transport(
            self.rank(),
            "negotiation",
            &names.join(", "),
            e,
        ))
    }

    /// `err` (made from `e`), naming the root cause when the peer that `e` lost said why it
    /// stopped: "rank 2 stopped: connection to rank 3 lost" rather than only "connection to
    /// rank 2 lost", whether this rank noticed in negotiation or inside a collective.
    pub(super) fn with_root_cause(&self, mut err: Error) -> Error {
        if let (Some(peer), Error::Transport { cause, .. }) = (err.peer(), &mut err)
            && let Ok(Some((_, why))) =
                self.transport
                    .recv_msg(Some(peer), TAG_ABORT, Instant::now())
        {
            *cause = format!("rank {peer} stopped: {}", String::from_utf8_lossy(&why));
        }
        err
    }

    /// Best effort: tells rank 0 (or, on rank 0, every rank) why this engine is stopping.
    /// Rank 0 already talks to every rank, so no new connection (to a dead host) is needed.
    fn tell_peers(&self, e: &Error) {
        let text = match e {
            Error::Transport { cause, .. } => cause.clone(),
            other => other.to_string(),
        };
        if self.rank() == 0 {
            for peer in 1..self.topology.size {
                let _ = self.transport.send_msg(peer, TAG_ABORT, text.as_bytes());
            }
        } else {
            let _ = self.transport.send_msg(0, TAG_ABORT, text.as_bytes());
        }
    }

    /// Hands newly enqueued entries (and a shutdown request) to the coordinator.
    fn submit_new(&mut self) -> Result<(), Error> {
        let (new, shutdown) = {
            let mut inbox = self.shared.inbox.lock();
            (std::mem::take(&mut inbox.new), inbox.shutdown)
        };
        let shutdown = shutdown && !self.sent_shutdown;
        if new.is_empty() && !shutdown {
            return Ok(());
        }
        self.sent_shutdown |= shutdown;
        let mut reqs = Vec::with_capacity(new.len());
        for entry in new {
            self.timeline.begin(&entry.req.name, "NEGOTIATE");
            reqs.push(entry.req.clone());
            self.table.insert(entry.req.name.clone(), entry);
        }
        let up = self.worker.submit(reqs, shutdown);
        if let Some(c) = self.coordinator.as_mut() {
            c.handle_message(Instant::now(), 0, up);
        } else {
            let bytes = wire::encode_up(&up);
            self.transport
                .send_msg(0, TAG_UP, &bytes)
                .map_err(|e| self.peer_failure(e))?;
        }
        Ok(())
    }

    /// Rank 0: broadcasts and runs everything the coordinator has decided.
    fn drain_coordinator(&mut self) -> Result<Option<Flow>, Error> {
        loop {
            let Some(c) = self.coordinator.as_mut() else {
                return Ok(None);
            };
            while let Some(w) = c.poll_warning() {
                tracing::warn!("stall: {w}");
            }
            let Some(down) = c.poll_transmit() else {
                return Ok(None);
            };
            let bytes = wire::encode_down(&down);
            for peer in 1..self.topology.size {
                // A peer that already left after a shutdown plan is not an error.
                if let Err(e) = self.transport.send_msg(peer, TAG_DOWN, &bytes)
                    && !self.sent_shutdown
                {
                    return Err(self.peer_failure(e));
                }
            }
            if let Flow::Stop(e) = self.apply(down)? {
                return Ok(Some(Flow::Stop(e)));
            }
        }
    }

    fn apply(&mut self, down: DownMsg) -> Result<Flow, Error> {
        let plan: Plan = self
            .worker
            .receive(down)
            .map_err(|e| Error::Bug(format!("inconsistent plan from the coordinator: {e}")))?;
        for response in plan.responses {
            self.execute(response)?;
        }
        if plan.shutdown {
            return Ok(Flow::Stop(Error::ShutDown {
                rank: self.rank(),
                reason: Some("a rank called shutdown".into()),
            }));
        }
        Ok(Flow::Continue)
    }

    /// Fails every pending and future operation with `reason`.
    fn fail_everything(&mut self, reason: Error) {
        let mut inbox = self.shared.inbox.lock();
        inbox.dead = Some(reason.clone());
        let new = std::mem::take(&mut inbox.new);
        inbox.in_flight.clear();
        drop(inbox);
        for entry in new.into_iter().chain(self.table.drain().map(|(_, e)| e)) {
            entry.handle.complete(Err(reason.clone()));
        }
    }

    pub(super) fn op_deadline(&self) -> Instant {
        deadline_after(self.tuning.op_timeout)
    }

    /// Completes an entry's handle and frees its name for reuse.
    pub(super) fn finish(&self, entry: Entry, result: Result<crate::handle::Completion, Error>) {
        self.shared.inbox.lock().in_flight.remove(&entry.req.name);
        entry.handle.complete(result);
    }
}
