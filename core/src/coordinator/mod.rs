//! The coordinator: decides *what* every rank runs, and in which order.
//!
//! # Design overview
//!
//! A sans-IO state machine in the style of `quinn-proto`: it never reads a clock, opens a socket
//! or spawns a thread. The engine feeds it messages and the current [`Instant`], and drains what
//! it wants sent. It does not move tensor bytes, pick algorithms, or know about transports.
//!
//! Two halves speak one protocol:
//!
//! * [`Worker`] (one per rank): [`Worker::submit`] turns requests that became ready locally into
//!   one [`UpMsg`] for rank 0; [`Worker::receive`] turns each [`DownMsg`] into a fully resolved
//!   [`Plan`], the collectives to run in order.
//! * [`Coordinator`] (rank 0 only): [`Coordinator::handle_message`] takes every `UpMsg` (rank 0's
//!   own included) and [`Coordinator::poll_transmit`] yields `DownMsg`s that the engine sends to
//!   every rank in the same order. So every rank applies the same stream and runs the same plan.
//!
//! # How it works
//!
//! Event-driven, not in rounds. Each incoming `UpMsg` is processed at once:
//!
//! 1. Every item becomes a `Request` — sent in full, or rebuilt from a cache id (`cache.rs`).
//! 2. The message table (`negotiate.rs`) files it under its name. A name is ready when every rank
//!    has submitted it or joined. A ready name leaves the table and is checked for agreement
//!    (kind, dtype, op, root, scales, shapes, alltoall splits) into one [`Response`]: the resolved
//!    collective, or one error naming the tensor, the field and each rank's value.
//!    A name submitted in a group (an `UpItem::Group`) waits until every member of its group is
//!    ready on every rank; the group is then answered whole, its members back to back, and ranks
//!    that grouped different names get one error for every name involved (`negotiate/group.rs`).
//! 3. Whatever became ready during this message is fused (`fusion.rs`): compatible allreduces are
//!    merged up to the fusion threshold, with look-ahead that keeps per-name order.
//! 4. Each response is encoded against the response cache: the id of an identical cached entry, or
//!    in full with a fresh id (and any eviction) that every rank applies at the same point.
//! 5. The result is queued as one `DownMsg` right away, so a tensor ready everywhere is answered
//!    with no timer in the way; responses leave in the order their names became ready.
//!
//! Join: a rank that joined counts as present for every name; it contributes the identity to
//! reductions and zero rows to allgathers. When all ranks have joined, a Join response names the
//! last one to join. Shutdown: any rank's flag produces a final `DownMsg` with `shutdown` set;
//! names still pending stay unanswered. Stalls (`stall.rs`): [`Coordinator::poll_timeout`] says
//! when to call [`Coordinator::handle_timeout`], which reports names some ranks never submitted
//! through [`Coordinator::poll_warning`] and, if configured, fails them.
//!
//! The cache is the steady-state fast path and the subtle part: ranks encode with the cache as
//! of the last `DownMsg` they applied while the coordinator may have moved on. Ids are never
//! reused, every `UpMsg` carries its sender's epoch, and retired entries stay as tombstones until
//! every rank has reported an epoch past their retirement (see `cache.rs`).

mod cache;
mod fusion;
mod message;
mod negotiate;
mod stall;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub(crate) use message::Request;
pub use message::{
    CacheInsert, DownItem, DownMsg, GroupTag, Knobs, Plan, ProtocolError, Response, ResponseError,
    TensorInfo, UpItem, UpMsg,
};
pub use worker::Worker;

use crate::types::CollectiveKind;

use cache::ResponseCache;
use negotiate::{MessageTable, Ready};
use stall::StallInspector;

/// Coordinator settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Largest fused allreduce in bytes (default 128 MiB); a bigger single tensor runs alone.
    pub fusion_threshold: usize,
    /// Response cache entries (default 1024); 0 disables the cache.
    pub cache_capacity: usize,
    /// Report a name submitted by some ranks but not all after this long (default 60 s).
    pub stall_warning: Option<Duration>,
    /// Fail such a name with an error response after this long (default: never).
    pub stall_shutdown: Option<Duration>,
    /// Fuse a group's tensors only with each other, never with tensors outside the group
    /// (`HOROVOD_DISABLE_GROUP_FUSION`; default false: groups fuse like any other tensors).
    pub disable_group_fusion: bool,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            fusion_threshold: 128 * 1024 * 1024,
            cache_capacity: 1024,
            stall_warning: Some(Duration::from_secs(60)),
            stall_shutdown: None,
            disable_group_fusion: false,
        }
    }
}

/// Rank 0's negotiation state machine.
#[derive(Debug)]
pub struct Coordinator {
    size: usize,
    fusion_threshold: u64,
    disable_group_fusion: bool,
    table: MessageTable,
    cache: ResponseCache,
    stall: StallInspector,
    outbox: VecDeque<DownMsg>,
    warnings: VecDeque<String>,
    /// When the timeline is on: (tensor, rank, when) for each request as it arrives, for the
    /// timeline's per-rank readiness marks. `None` costs nothing on the hot path.
    readiness: Option<VecDeque<(String, usize, Instant)>>,
    /// Sequence number of the next `DownMsg`.
    next_seq: u64,
    /// Latest epoch each rank reported.
    epochs: Vec<u64>,
    shut_down: bool,
    /// Autotune values to announce with the next message.
    pending_knobs: Option<Knobs>,
}

impl Coordinator {
    /// A coordinator for `size` ranks.
    pub fn new(size: usize, config: CoordinatorConfig) -> Self {
        Self {
            size,
            fusion_threshold: config.fusion_threshold as u64,
            disable_group_fusion: config.disable_group_fusion,
            table: MessageTable::new(size),
            cache: ResponseCache::new(config.cache_capacity),
            stall: StallInspector::new(config.stall_warning, config.stall_shutdown),
            outbox: VecDeque::new(),
            warnings: VecDeque::new(),
            readiness: None,
            next_seq: 0,
            epochs: vec![0; size],
            shut_down: false,
            pending_knobs: None,
        }
    }

    /// Takes one message from rank `from`; any responses it makes ready are queued at once.
    pub fn handle_message(&mut self, now: Instant, from: usize, msg: UpMsg) {
        if self.shut_down {
            return;
        }
        if from >= self.size {
            self.warnings.push_back(format!(
                "protocol: message from rank {from} ignored; the job has {} ranks",
                self.size
            ));
            return;
        }
        if msg.epoch > self.next_seq {
            self.warnings.push_back(format!(
                "protocol: rank {from} reports epoch {} but only {} messages were sent",
                msg.epoch, self.next_seq
            ));
        }
        let epoch = msg.epoch.min(self.next_seq);
        self.epochs[from] = self.epochs[from].max(epoch);
        let mut ready = Ready::default();
        // Every request of the message is filed before any is answered (a join first answers
        // what is ready before it), so a group mismatch sees all the names this message brings.
        let mut became_ready = Vec::new();
        for item in msg.items {
            let reqs = match item {
                UpItem::Group { id, items } => self.unpack_group(from, id, items),
                item => self.resolve(from, item).into_iter().collect(),
            };
            for req in reqs {
                if let Some(marks) = self.readiness.as_mut() {
                    marks.push_back((req.name.clone(), from, now));
                }
                if req.kind == CollectiveKind::Join {
                    let names = std::mem::take(&mut became_ready);
                    self.table.answer_ready(now, names, &mut ready);
                    self.table.submit(now, from, req, &mut ready);
                } else if let Some(name) = self.table.file(now, from, req) {
                    became_ready.push(name);
                }
            }
        }
        self.table.answer_ready(now, became_ready, &mut ready);
        self.flush(ready, msg.shutdown);
        if self.cache.has_tombstones() {
            let min = self.epochs.iter().copied().min().unwrap_or(0);
            self.cache.reclaim(min);
        }
    }

    /// The request an item stands for (a cached one rebuilt for `from`); `None`, with a
    /// warning, for an unknown cache id or a group nested in a group.
    fn resolve(&mut self, from: usize, item: UpItem) -> Option<Request> {
        match item {
            UpItem::Full(req) => Some(req),
            UpItem::Cached(id) => {
                let req = self.cache.request(id, from);
                if req.is_none() {
                    self.warnings.push_back(format!(
                        "protocol: rank {from} sent unknown cache id {id}; item dropped"
                    ));
                }
                req
            }
            UpItem::Group { id, .. } => {
                self.warnings.push_back(format!(
                    "protocol: rank {from} nested group {id} in a group; dropped"
                ));
                None
            }
        }
    }

    /// Unpacks rank `from`'s group `id`: declares its members and returns them tagged.
    fn unpack_group(&mut self, from: usize, id: u64, items: Vec<UpItem>) -> Vec<Request> {
        let mut reqs: Vec<Request> = items
            .into_iter()
            .filter_map(|item| self.resolve(from, item))
            .filter(|q| q.kind != CollectiveKind::Join)
            .collect();
        let tag = GroupTag {
            id,
            size: u32::try_from(reqs.len()).unwrap_or(u32::MAX),
        };
        let names = reqs.iter().map(|q| q.name.clone()).collect();
        if !self.table.declare_group(from, id, names) {
            self.warnings.push_back(format!(
                "protocol: rank {from} reused group id {id} while it was pending"
            ));
        }
        for req in &mut reqs {
            req.group = Some(tag);
        }
        reqs
    }

    /// Autotune: fuses with `knobs`' threshold and uses the cache as they say from now on, and
    /// announces them in the next message, so every rank switches at the same point. Sent at
    /// once (in a message without responses) when nothing else is ready.
    pub fn set_knobs(&mut self, knobs: Knobs) {
        if self.shut_down {
            return;
        }
        self.fusion_threshold = knobs.fusion_threshold;
        self.cache.set_enabled(knobs.cache_enabled);
        self.pending_knobs = Some(knobs);
        self.flush(Ready::default(), false);
    }

    /// Runs the stall checks due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.shut_down {
            return;
        }
        let (warning, errors) = self.stall.check(now, &mut self.table);
        self.warnings.extend(warning);
        self.flush(errors, false);
    }

    /// The next message to send to every rank, in order.
    pub fn poll_transmit(&mut self) -> Option<DownMsg> {
        self.outbox.pop_front()
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.shut_down {
            return None;
        }
        self.stall.next_deadline(&self.table)
    }

    /// Stall reports and protocol complaints for the log.
    pub fn poll_warning(&mut self) -> Option<String> {
        self.warnings.pop_front()
    }

    /// Starts (or stops) recording when each rank's request for each name arrives.
    pub fn record_readiness(&mut self, on: bool) {
        self.readiness = on.then(VecDeque::new);
    }

    /// The next readiness mark: rank `.1` submitted tensor `.0` at `.2` (as recorded since
    /// [`record_readiness`](Self::record_readiness) was turned on).
    pub fn poll_readiness(&mut self) -> Option<(String, usize, Instant)> {
        self.readiness.as_mut()?.pop_front()
    }

    /// Number of names submitted by some ranks and still waiting for others.
    pub fn pending_names(&self) -> usize {
        self.table.len()
    }

    /// Live cache entries and tombstones awaiting every rank's epoch.
    pub fn cache_stats(&self) -> (usize, usize) {
        self.cache.counts()
    }

    /// True once a shutdown has been sent.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    /// Fuses `ready` (in ready order), encodes it against the cache and queues one `DownMsg`.
    fn flush(&mut self, ready: Ready, shutdown: bool) {
        if ready.is_empty() && !shutdown && self.pending_knobs.is_none() {
            return;
        }
        let seq = self.next_seq;
        let isolate = self.disable_group_fusion.then_some(ready.groups.as_slice());
        let plan = fusion::plan(&ready.responses, isolate, self.fusion_threshold);
        let mut slots: Vec<Option<Response>> = ready.responses.into_iter().map(Some).collect();
        let groups = plan
            .into_iter()
            .map(|group| {
                group
                    .into_iter()
                    .filter_map(|i| slots[i].take())
                    .map(|resp| self.cache.decide(resp, seq))
                    .collect()
            })
            .collect();
        self.outbox.push_back(DownMsg {
            seq,
            groups,
            shutdown,
            knobs: self.pending_knobs.take(),
        });
        self.next_seq += 1;
        self.shut_down = shutdown;
    }
}
