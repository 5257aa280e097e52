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
    CacheInsert, DownItem, DownMsg, Plan, ProtocolError, Response, ResponseError, TensorInfo,
    UpItem, UpMsg,
};
pub use worker::Worker;

use cache::ResponseCache;
use negotiate::MessageTable;
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
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            fusion_threshold: 128 * 1024 * 1024,
            cache_capacity: 1024,
            stall_warning: Some(Duration::from_secs(60)),
            stall_shutdown: None,
        }
    }
}

/// Rank 0's negotiation state machine.
#[derive(Debug)]
pub struct Coordinator {
    size: usize,
    fusion_threshold: u64,
    table: MessageTable,
    cache: ResponseCache,
    stall: StallInspector,
    outbox: VecDeque<DownMsg>,
    warnings: VecDeque<String>,
    /// Sequence number of the next `DownMsg`.
    next_seq: u64,
    /// Latest epoch each rank reported.
    epochs: Vec<u64>,
    shut_down: bool,
}

impl Coordinator {
    /// A coordinator for `size` ranks.
    pub fn new(size: usize, config: CoordinatorConfig) -> Self {
        Self {
            size,
            fusion_threshold: config.fusion_threshold as u64,
            table: MessageTable::new(size),
            cache: ResponseCache::new(config.cache_capacity),
            stall: StallInspector::new(config.stall_warning, config.stall_shutdown),
            outbox: VecDeque::new(),
            warnings: VecDeque::new(),
            next_seq: 0,
            epochs: vec![0; size],
            shut_down: false,
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
        let mut ready = Vec::new();
        for item in msg.items {
            let req = match item {
                UpItem::Full(req) => req,
                UpItem::Cached(id) => match self.cache.request(id, from) {
                    Some(req) => req,
                    None => {
                        self.warnings.push_back(format!(
                            "protocol: rank {from} sent unknown cache id {id}; item dropped"
                        ));
                        continue;
                    }
                },
            };
            self.table.submit(now, from, req, &mut ready);
        }
        self.flush(ready, msg.shutdown);
        if self.cache.has_tombstones() {
            let min = self.epochs.iter().copied().min().unwrap_or(0);
            self.cache.reclaim(min);
        }
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
    fn flush(&mut self, ready: Vec<Response>, shutdown: bool) {
        if ready.is_empty() && !shutdown {
            return;
        }
        let seq = self.next_seq;
        let plan = fusion::plan(&ready, self.fusion_threshold);
        let mut slots: Vec<Option<Response>> = ready.into_iter().map(Some).collect();
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
        });
        self.next_seq += 1;
        self.shut_down = shutdown;
    }
}
