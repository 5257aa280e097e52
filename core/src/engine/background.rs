//! The engine's IO shell: moves requests to the coordinator and plans back, hands each
//! response to the executor and completes the handles with what it returns.
//!
//! How it works: the loop takes newly submitted entries from the queue, encodes them through
//! the `Worker`
//! (which replaces cached requests by compact ids) and sends them to rank 0 at once — there
//! is no fixed negotiation round, so an idle job answers a single small allreduce in one
//! round trip. Rank 0 feeds every message into the sans-IO `Coordinator`, broadcasts each
//! `DownMsg` it produces to all ranks before running it locally, and every rank runs the
//! resulting plans in order. Waiting happens inside the transport (spin, then sleep in the
//! kernel); `submit` interrupts the wait through the transport's waker.
//!
//! This file is the only part of the engine that does IO with control messages, owns the
//! coordinator and decides what a failure means: a collective's error comes back from the
//! executor as a value, and the shell names its root cause, tells the peers, and stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hora_transport::{Tag, Transport, TransportError, deadline_after};

use super::executor::Executor;
use super::queue::TensorQueue;
use crate::autotune::{AutotuneParams, Autotuner, Knobs, Row};
use crate::collectives::Collectives;
use crate::config::{Topology, Tuning};
use crate::coordinator::{Coordinator, CoordinatorConfig, DownMsg, Plan, Response, Worker};
use crate::error::Error;
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
    topology: Topology,
    /// Where rank 0 writes its Chrome-trace timeline, if asked for.
    timeline_path: Option<std::path::PathBuf>,
    transport: Arc<dyn Transport>,
    queue: TensorQueue,
    worker: Worker,
    coordinator: Option<Coordinator>,
    executor: Executor,
    sent_shutdown: bool,
    /// HOROVOD_TIMELINE_MARK_CYCLES for the timeline opened at start.
    mark_cycles: bool,
    /// Rank 0 with `HOROVOD_AUTOTUNE=1`, until the best values are fixed; `None` costs the
    /// hot path one branch per response.
    autotune: Option<Tuner>,
}

/// Rank 0's autotuner and its CSV log.
struct Tuner {
    tuner: Autotuner,
    log: Option<std::io::BufWriter<std::fs::File>>,
}

impl Tuner {
    /// Writes the rows of finished samples (flushed at once: a job may be killed any time).
    fn write_rows(&mut self) {
        use std::io::Write;
        while let Some(row) = self.tuner.poll_row() {
            tracing::info!(
                "autotune: sample {}{}: fusion threshold {} B, segment {} B, cache {}, {:.0} B/s",
                self.tuner.scored(),
                if row.best {
                    " (best, fixed from now on)"
                } else {
                    ""
                },
                row.knobs.fusion_threshold,
                row.knobs.segment_bytes,
                if row.knobs.cache_enabled { "on" } else { "off" },
                row.score
            );
            if let Some(f) = &mut self.log
                && let Err(e) = writeln!(f, "{}", row.csv()).and_then(|()| f.flush())
            {
                tracing::warn!("HOROVOD_AUTOTUNE_LOG: cannot write: {e}");
                self.log = None;
            }
        }
    }
}

/// `HOROVOD_TIMELINE=DYNAMIC`: the timeline is allowed but starts only on request.
pub(crate) const DYNAMIC_TIMELINE: &str = "DYNAMIC";

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
        queue: TensorQueue,
    ) -> Self {
        let autotune = (topology.rank == 0)
            .then(|| Self::tuner(&tuning, &*collectives))
            .flatten();
        let coordinator = (topology.rank == 0).then(|| {
            Coordinator::new(
                topology.size,
                CoordinatorConfig {
                    fusion_threshold: tuning.fusion_threshold,
                    cache_capacity: tuning.cache_capacity,
                    stall_warning: tuning.stall_warning,
                    stall_shutdown: tuning.stall_shutdown,
                    disable_group_fusion: tuning.disable_group_fusion,
                },
            )
        });
        Self {
            worker: Worker::new(topology.rank, topology.size, tuning.cache_capacity),
            coordinator,
            topology,
            mark_cycles: tuning.timeline_mark_cycles,
            timeline_path: tuning.timeline,
            transport,
            queue,
            executor: Executor::new(collectives, tuning.op_timeout),
            sent_shutdown: false,
            autotune,
        }
    }

    /// Rank 0's tuner when `HOROVOD_AUTOTUNE=1`, with its CSV log opened and headed.
    fn tuner(tuning: &Tuning, collectives: &dyn Collectives) -> Option<Tuner> {
        // Asking reads nothing back: the value set is the one configured.
        let reads_segments = collectives.set_segment_bytes(tuning.segment_bytes);
        let params = AutotuneParams::from_tuning(tuning, reads_segments)?;
        let initial = Knobs {
            fusion_threshold: tuning.fusion_threshold as u64,
            segment_bytes: tuning.segment_bytes as u64,
            cache_enabled: tuning.cache_capacity > 0,
        };
        let Some(tuner) = Autotuner::new(params, initial) else {
            tracing::warn!(
                "HOROVOD_AUTOTUNE=1 has nothing to tune: every knob is fixed by its own variable"
            );
            return None;
        };
        let log = tuning.autotune_log.as_ref().and_then(|path| {
            use std::io::Write;
            let opened = std::fs::File::create(path).and_then(|f| {
                let mut w = std::io::BufWriter::new(f);
                writeln!(w, "{}", Row::HEADER)?;
                w.flush()?;
                Ok(w)
            });
            opened
                .map_err(|e| {
                    tracing::warn!(
                        "HOROVOD_AUTOTUNE_LOG={}: cannot create: {e}",
                        path.display()
                    )
                })
                .ok()
        });
        tracing::info!("autotune: starting from {initial:?}");
        Some(Tuner { tuner, log })
    }

    pub(crate) fn run(mut self) {
        // DYNAMIC: nothing is written until start_timeline.
        if let (0, Some(path)) = (self.topology.rank, self.timeline_path.take())
            && path.as_os_str() != DYNAMIC_TIMELINE
        {
            match Timeline::create(&path) {
                Ok(t) => {
                    if let Some(c) = self.coordinator.as_mut() {
                        c.record_readiness(true);
                    }
                    self.executor.set_timeline(t.with_cycles(self.mark_cycles));
                }
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
                    self.executor.abort(&e.to_string());
                    break e;
                }
            }
        };
        self.queue.fail_everything(reason);
        self.executor.finish();
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
                    self.write_readiness();
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
        let names = self.queue.waiting_names();
        self.with_root_cause(Error::transport(
            self.rank(),
            "negotiation",
            &names.join(", "),
            e,
        ))
    }

    /// `err`, naming the root cause when the peer it lost said why it stopped: "rank 2
    /// stopped: connection to rank 3 lost" rather than only "connection to rank 2 lost",
    /// whether this rank noticed in negotiation or inside a collective.
    fn with_root_cause(&self, mut err: Error) -> Error {
        if let Error::Transport {
            cause,
            peer: Some(peer),
            ..
        } = &mut err
            && let Ok(Some((_, why))) =
                self.transport
                    .recv_msg(Some(*peer), TAG_ABORT, Instant::now())
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

    /// Hands newly submitted requests (and a shutdown request) to the coordinator.
    fn submit_new(&mut self) -> Result<(), Error> {
        if let Some(to) = self.queue.take_timeline()
            && self.rank() == 0
        {
            self.switch_timeline(to);
        }
        let mut reqs = Vec::new();
        let timeline = self.executor.timeline_mut();
        let shutdown = self.queue.take_new(|req| {
            timeline.negotiate_start(&req.name, Instant::now());
            reqs.push(req);
        });
        let shutdown = shutdown && !self.sent_shutdown;
        if reqs.is_empty() && !shutdown {
            return Ok(());
        }
        self.sent_shutdown |= shutdown;
        let up = self.worker.submit(reqs, shutdown);
        if let Some(c) = self.coordinator.as_mut() {
            c.handle_message(Instant::now(), 0, up);
            self.write_readiness();
        } else {
            let bytes = wire::encode_up(&up);
            self.transport
                .send_msg(0, TAG_UP, &bytes)
                .map_err(|e| self.peer_failure(e))?;
        }
        Ok(())
    }

    /// Rank 0: writes the timeline to `to` (path, mark cycles) from now on, or stops it.
    fn switch_timeline(&mut self, to: Option<(std::path::PathBuf, bool)>) {
        let next = match to {
            None => Timeline::disabled(),
            Some((path, cycles)) => match Timeline::create(&path) {
                Ok(t) => t.with_cycles(cycles),
                Err(e) => {
                    tracing::warn!("start_timeline({}): cannot create: {e}", path.display());
                    Timeline::disabled()
                }
            },
        };
        if let Some(c) = self.coordinator.as_mut() {
            c.record_readiness(next.is_enabled());
        }
        // The old timeline is finished (closed and flushed) when it is dropped here.
        self.executor.set_timeline(next);
    }

    /// Rank 0: writes the timeline's per-rank readiness marks of the message just handled
    /// (at once, so the trace stays in time order).
    fn write_readiness(&mut self) {
        if let Some(c) = self.coordinator.as_mut() {
            while let Some((name, rank, at)) = c.poll_readiness() {
                self.executor.timeline_mut().rank_ready(&name, rank, at);
            }
        }
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
            self.executor.timeline_mut().mark_cycle();
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

    fn apply(&mut self, mut down: DownMsg) -> Result<Flow, Error> {
        if let Some(k) = down.knobs.take() {
            self.switch_knobs(k);
        }
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

    /// Autotune: every rank switches to `k` at the same message (the coordinator switched its
    /// fusion and cache already when it sent it).
    fn switch_knobs(&mut self, k: Knobs) {
        tracing::info!(
            rank = self.rank(),
            "autotune: values fusion_threshold={} segment_bytes={} cache_enabled={}",
            k.fusion_threshold,
            k.segment_bytes,
            u8::from(k.cache_enabled)
        );
        self.worker.set_use_cache(k.cache_enabled);
        self.executor
            .set_segment_bytes(usize::try_from(k.segment_bytes).unwrap_or(usize::MAX));
    }

    /// Rank 0: scores a completed response and, when a sample ends with new values, hands
    /// them to the coordinator.
    fn tune(&mut self, names: &[String], bytes: u64) {
        let Some(t) = self.autotune.as_mut() else {
            return;
        };
        let next = t
            .tuner
            .record(Instant::now(), names.iter().map(String::as_str), bytes);
        t.write_rows();
        if let Some(k) = next
            && let Some(c) = self.coordinator.as_mut()
        {
            c.set_knobs(k);
        }
        if t.tuner.is_done() {
            tracing::info!("autotune: done; the best values stay fixed");
            self.autotune = None;
        }
    }

    /// Runs one response on the executor and completes its handles; a failed collective
    /// stops the engine with its root cause.
    fn execute(&mut self, resp: Response) -> Result<(), Error> {
        let entries = resp
            .tensors
            .iter()
            .map(|t| self.queue.take(&t.name))
            .collect();
        // A failed negotiation moved no bytes, so it is not scored.
        let tuned = (self.autotune.is_some() && resp.error.is_none()).then(|| {
            (
                resp.tensors
                    .iter()
                    .map(|t| t.name.clone())
                    .collect::<Vec<_>>(),
                resp.bytes(),
            )
        });
        let mut done = self.executor.run(resp, entries);
        let stop = done.take_stop();
        for (entry, result) in done {
            self.queue.complete(entry, result);
        }
        if let (Some((names, bytes)), None) = (tuned, &stop) {
            self.tune(&names, bytes);
        }
        match stop {
            Some(err) => Err(self.with_root_cause(err)),
            None => Ok(()),
        }
    }
}
