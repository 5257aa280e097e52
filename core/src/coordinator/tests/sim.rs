//! `SimCluster`: every rank's [`Worker`] plus the [`Coordinator`], wired through the real wire
//! encoding, with a fake clock and fault injection (delayed, reordered or dropped messages).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::super::{Coordinator, CoordinatorConfig, Knobs, Request, Response, UpItem, Worker};
use crate::types::CollectiveKind;
use crate::wire;

/// A tiny deterministic generator (xorshift64*), so a failing seed replays exactly.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// An `UpMsg` on its way to rank 0.
#[derive(Debug)]
pub(crate) struct InFlight {
    /// Global send order, so the in-order mode delivers oldest first.
    order: u64,
    pub(crate) deliver_at: Instant,
    pub(crate) bytes: Vec<u8>,
}

/// How `step` picks the next event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Every `DownMsg` reaches every rank at once; `UpMsg`s arrive in send order.
    InOrder,
    /// Random interleaving: any sender's next `UpMsg` (per-sender order kept) or any rank's next
    /// `DownMsg` may come next, so ranks encode against stale caches.
    Shuffled,
}

/// The simulated job.
#[derive(Debug)]
pub(crate) struct SimCluster {
    pub(crate) nodes: Vec<Worker>,
    pub(crate) coordinator: Coordinator,
    pub(crate) clock: Instant,
    /// `UpMsg`s in flight, one queue per sender.
    pub(crate) inbox: Vec<VecDeque<InFlight>>,
    /// Encoded `DownMsg`s each rank has not applied yet.
    pub(crate) downbox: Vec<VecDeque<Vec<u8>>>,
    /// Every response each rank has been told to run, in order.
    pub(crate) plans: Vec<Vec<Response>>,
    /// For each response in `plans`, the sequence number of the `DownMsg` that carried it.
    pub(crate) seqs: Vec<Vec<u64>>,
    /// Whether each rank has received the shutdown.
    pub(crate) shut: Vec<bool>,
    /// Autotune values each rank switched to, with the message that carried them.
    pub(crate) knobs: Vec<Vec<(u64, Knobs)>>,
    /// Warnings the coordinator emitted.
    pub(crate) warnings: Vec<String>,
    /// Items sent as cache ids / in full, and total bytes up and down.
    pub(crate) stats: Stats,
    dropped: Vec<bool>,
    delay: Vec<Duration>,
    mode: Mode,
    pub(crate) rng: Rng,
    sent: u64,
}

/// Traffic counters.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) cached_items: usize,
    pub(crate) full_items: usize,
    pub(crate) up_bytes: usize,
    pub(crate) down_bytes: usize,
    pub(crate) down_msgs: usize,
}

impl SimCluster {
    /// A job of `size` ranks; workers use `config.cache_capacity`.
    pub(crate) fn new(size: usize, config: CoordinatorConfig, mode: Mode, seed: u64) -> Self {
        let cap = config.cache_capacity;
        Self {
            nodes: (0..size).map(|r| Worker::new(r, size, cap)).collect(),
            coordinator: Coordinator::new(size, config),
            clock: Instant::now(),
            inbox: (0..size).map(|_| VecDeque::new()).collect(),
            downbox: (0..size).map(|_| VecDeque::new()).collect(),
            plans: vec![Vec::new(); size],
            seqs: vec![Vec::new(); size],
            shut: vec![false; size],
            knobs: vec![Vec::new(); size],
            warnings: Vec::new(),
            stats: Stats::default(),
            dropped: vec![false; size],
            delay: vec![Duration::ZERO; size],
            mode,
            rng: Rng::new(seed),
            sent: 0,
        }
    }

    /// Number of ranks.
    pub(crate) fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Rank `rank` submits `reqs` (and maybe asks for shutdown).
    pub(crate) fn submit_with(&mut self, rank: usize, reqs: Vec<Request>, shutdown: bool) {
        let msg = self.nodes[rank].submit(reqs, shutdown);
        let mut items: Vec<&UpItem> = msg.items.iter().collect();
        while let Some(item) = items.pop() {
            match item {
                UpItem::Cached(_) => self.stats.cached_items += 1,
                UpItem::Full(_) => self.stats.full_items += 1,
                UpItem::Group { items: members, .. } => items.extend(members),
            }
        }
        let bytes = wire::encode_up(&msg);
        self.stats.up_bytes += bytes.len();
        let deliver_at = self.clock + self.delay[rank];
        self.sent += 1;
        let order = self.sent;
        self.inbox[rank].push_back(InFlight {
            order,
            deliver_at,
            bytes,
        });
    }

    /// Rank `rank` submits `reqs`.
    pub(crate) fn submit(&mut self, rank: usize, reqs: Vec<Request>) {
        self.submit_with(rank, reqs, false);
    }

    /// From now on rank `rank`'s messages never arrive and it applies nothing (a dead rank).
    pub(crate) fn drop_rank(&mut self, rank: usize) {
        self.dropped[rank] = true;
        self.inbox[rank].clear();
        self.downbox[rank].clear();
    }

    /// Messages rank `rank` sends from now on take `d` to arrive.
    pub(crate) fn set_delay(&mut self, rank: usize, d: Duration) {
        self.delay[rank] = d;
    }

    /// Moves the clock and runs the coordinator's timers that fell due.
    pub(crate) fn advance(&mut self, d: Duration) {
        self.clock += d;
        self.fire_timers();
    }

    fn fire_timers(&mut self) {
        while let Some(t) = self.coordinator.poll_timeout() {
            if t > self.clock {
                break;
            }
            self.coordinator.handle_timeout(self.clock);
            self.collect();
            if self.coordinator.poll_timeout() == Some(t) {
                break;
            }
        }
    }

    /// Drains the coordinator's output into every live rank's downbox.
    pub(crate) fn collect(&mut self) {
        while let Some(down) = self.coordinator.poll_transmit() {
            let bytes = wire::encode_down(&down);
            self.stats.down_bytes += bytes.len();
            self.stats.down_msgs += 1;
            for (r, q) in self.downbox.iter_mut().enumerate() {
                if !self.dropped[r] {
                    q.push_back(bytes.clone());
                }
            }
        }
        while let Some(w) = self.coordinator.poll_warning() {
            self.warnings.push(w);
        }
    }

    /// Delivers the oldest message of `sender` to the coordinator.
    fn deliver_up(&mut self, sender: usize) {
        let Some(m) = self.inbox[sender].pop_front() else {
            return;
        };
        let msg = wire::decode_up(&m.bytes).expect("sim sends valid frames");
        self.coordinator.handle_message(self.clock, sender, msg);
        self.collect();
    }

    /// Rank `rank` applies its next `DownMsg`.
    fn deliver_down(&mut self, rank: usize) {
        let Some(bytes) = self.downbox[rank].pop_front() else {
            return;
        };
        let msg = wire::decode_down(&bytes).expect("sim sends valid frames");
        let seq = msg.seq;
        if let Some(k) = msg.knobs {
            // As the engine does: switch before running the message's responses.
            self.nodes[rank].set_use_cache(k.cache_enabled);
            self.knobs[rank].push((seq, k));
        }
        let plan = self.nodes[rank]
            .receive(msg)
            .expect("every rank can apply the stream");
        self.seqs[rank].extend(plan.responses.iter().map(|_| seq));
        self.plans[rank].extend(plan.responses);
        self.shut[rank] |= plan.shutdown;
    }

    /// Senders whose next message may be delivered now.
    fn ready_senders(&self) -> Vec<usize> {
        (0..self.size())
            .filter(|&r| {
                self.inbox[r]
                    .front()
                    .is_some_and(|m| m.deliver_at <= self.clock)
            })
            .collect()
    }

    /// Performs one event; false when nothing can happen without the clock moving.
    pub(crate) fn step(&mut self) -> bool {
        let senders = self.ready_senders();
        let downs: Vec<usize> = (0..self.size())
            .filter(|&r| !self.downbox[r].is_empty())
            .collect();
        if senders.is_empty() && downs.is_empty() {
            return false;
        }
        match self.mode {
            Mode::InOrder => {
                if downs.is_empty() {
                    let s = *senders
                        .iter()
                        .min_by_key(|&&r| self.inbox[r][0].order)
                        .unwrap();
                    self.deliver_up(s);
                } else {
                    downs.into_iter().for_each(|r| self.deliver_down(r));
                }
            }
            Mode::Shuffled => {
                let pick = self.rng.below(senders.len() + downs.len());
                if pick < senders.len() {
                    self.deliver_up(senders[pick]);
                } else {
                    self.deliver_down(downs[pick - senders.len()]);
                }
            }
        }
        true
    }

    /// Moves the clock to the next delayed message or coordinator timer, whichever is first,
    /// while messages are in flight; false when nothing is in flight.
    fn wait_for_next(&mut self) -> bool {
        let Some(next) = self
            .inbox
            .iter()
            .filter_map(|q| q.front().map(|m| m.deliver_at))
            .min()
        else {
            return false;
        };
        let t = self
            .coordinator
            .poll_timeout()
            .map_or(next, |timer| timer.min(next));
        self.clock = self.clock.max(t);
        self.fire_timers();
        true
    }

    /// Runs events, moving the clock to delayed messages, until nothing is left in flight.
    pub(crate) fn run_until_idle(&mut self) {
        for _ in 0..10_000_000 {
            if self.step() {
                continue;
            }
            if !self.wait_for_next() {
                return;
            }
        }
        panic!("simulation did not settle");
    }

    /// Runs a workload: `scripts[r]` is rank r's batches in order. A rank submits its next batch
    /// once none of that batch's names is still waiting for an answer on that rank; batches and
    /// deliveries interleave at random (in `Shuffled` mode) or submissions go first.
    pub(crate) fn run_scripts(&mut self, scripts: Vec<Vec<Vec<Request>>>) {
        let mut scripts: Vec<VecDeque<Vec<Request>>> =
            scripts.into_iter().map(Into::into).collect();
        let mut waiting: Vec<HashMap<String, usize>> = vec![HashMap::new(); self.size()];
        let mut seen = vec![0usize; self.size()];
        loop {
            for (r, wait) in waiting.iter_mut().enumerate() {
                for resp in &self.plans[r][seen[r]..] {
                    let names: Vec<&str> = if resp.kind == CollectiveKind::Join {
                        vec!["join"]
                    } else {
                        resp.tensors.iter().map(|t| t.name.as_str()).collect()
                    };
                    for n in names {
                        if let Some(c) = wait.get_mut(n) {
                            *c -= 1;
                            if *c == 0 {
                                wait.remove(n);
                            }
                        }
                    }
                }
                seen[r] = self.plans[r].len();
            }
            let can_submit: Vec<usize> = (0..self.size())
                .filter(|&r| {
                    !self.dropped[r]
                        && scripts[r]
                            .front()
                            .is_some_and(|b| b.iter().all(|q| !waiting[r].contains_key(&key(q))))
                })
                .collect();
            let submit_now = match self.mode {
                Mode::InOrder => !can_submit.is_empty(),
                Mode::Shuffled => !can_submit.is_empty() && self.rng.below(3) == 0,
            };
            if submit_now {
                let r = can_submit[self.rng.below(can_submit.len())];
                let batch = scripts[r].pop_front().unwrap_or_default();
                for q in &batch {
                    *waiting[r].entry(key(q)).or_default() += 1;
                }
                self.submit(r, batch);
                continue;
            }
            if self.step() {
                continue;
            }
            if can_submit.is_empty() && !self.wait_for_next() {
                return;
            }
        }
    }
}

/// The name a response will carry for this request (joins answer under "join").
fn key(q: &Request) -> String {
    if q.kind == CollectiveKind::Join {
        "join".to_owned()
    } else {
        q.name.clone()
    }
}
