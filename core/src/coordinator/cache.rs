//! The response cache: the steady-state fast path.
//!
//! After a name has been negotiated once, the coordinator stores its single-tensor [`Response`]
//! under a fresh id and announces the id in the [`DownMsg`](super::DownMsg) that carries it, so
//! every rank and the coordinator hold the same entry. Next time a rank's request equals what
//! it would have sent for that entry ([`matches()`]), it sends only the id, and the coordinator
//! rebuilds the exact request ([`request_for`]) and negotiates as usual.
//!
//! The system is not lockstep: a rank encodes with the cache as of the last `DownMsg` it applied
//! while the coordinator may already have evicted or replaced that entry. Three rules make that
//! safe: ids are never reused (a replaced or evicted entry's id is retired forever), every
//! `UpMsg` reports how many `DownMsg`s its sender had applied (its epoch), and a retired entry
//! stays readable as a tombstone until every rank's reported epoch has passed the message that
//! retired it. Evictions are the coordinator's alone (LRU) and are announced in the stream, so the
//! ranks never need their own eviction policy.

use std::collections::{BTreeMap, VecDeque};

use super::message::{CacheInsert, DownItem, Request, Response};
use crate::fasthash::FastMap;
use crate::types::CollectiveKind;

/// The request rank `rank` submitted when `resp` (a cached, single-tensor response) was agreed.
pub(crate) fn request_for(resp: &Response, rank: usize) -> Request {
    let info = &resp.tensors[0];
    let mut shape = info.shape.clone();
    let mut splits = Vec::new();
    match resp.kind {
        CollectiveKind::Allgather => {
            if let (Some(d0), Some(&fd)) = (shape.first_mut(), info.first_dims.get(rank)) {
                *d0 = fd;
            }
        }
        CollectiveKind::Alltoall => {
            if let Some(own) = info.splits.get(rank) {
                splits = own.clone();
                if let Some(d0) = shape.first_mut() {
                    *d0 = own.iter().fold(0u64, |a, &b| a.saturating_add(b));
                }
            }
        }
        _ => {}
    }
    Request {
        name: info.name.clone(),
        kind: resp.kind,
        dtype: resp.dtype,
        shape,
        op: resp.op,
        root: resp.root,
        prescale: resp.prescale,
        postscale: resp.postscale,
        splits,
        group: None,
    }
}

/// True when rank `rank` may send `req` as the id of cached `resp`: the coordinator will rebuild
/// (with [`request_for`]) a request that negotiates exactly like `req`. Scales are compared bit
/// for bit, as negotiation does. Runs on every submission, so it allocates nothing; a false
/// "no" only costs a full request, a false "yes" would corrupt negotiation.
pub(crate) fn matches(resp: &Response, rank: usize, req: &Request) -> bool {
    let info = &resp.tensors[0];
    let same_params = req.name == info.name
        && req.kind == resp.kind
        && req.dtype == resp.dtype
        && req.op == resp.op
        && req.root == resp.root
        && req.prescale.to_bits() == resp.prescale.to_bits()
        && req.postscale.to_bits() == resp.postscale.to_bits();
    if !same_params || req.shape.len() != info.shape.len() || req.shape.is_empty() {
        return same_params && req.shape == info.shape && req.splits.is_empty();
    }
    let tail_same = req.shape[1..] == info.shape[1..];
    let dim0 = req.shape[0];
    match resp.kind {
        CollectiveKind::Allgather => {
            tail_same && req.splits.is_empty() && info.first_dims.get(rank) == Some(&dim0)
        }
        CollectiveKind::Alltoall => {
            let Some(own) = info.splits.get(rank) else {
                return false;
            };
            let sum = own.iter().try_fold(0u64, |a, &b| a.checked_add(b));
            if !tail_same || sum != Some(dim0) {
                return false;
            }
            // An empty split means "even": equal to explicit even splits for negotiation.
            let size = own.len() as u64;
            let even =
                || size > 0 && dim0.is_multiple_of(size) && own.iter().all(|&s| s == dim0 / size);
            req.splits == *own || (req.splits.is_empty() && even())
        }
        _ => req.shape == info.shape && req.splits.is_empty(),
    }
}

/// True when a successful response may be cached at all.
fn cacheable(resp: &Response) -> bool {
    resp.error.is_none() && resp.kind != CollectiveKind::Join && resp.tensors.len() == 1
}

/// A rank's copy of the cache: exactly the entries the coordinator announced, nothing else.
#[derive(Debug, Default)]
pub(crate) struct CacheMirror {
    entries: FastMap<u32, Response>,
    by_name: FastMap<String, u32>,
}

impl CacheMirror {
    /// The id to send for `req` from `rank`, if the cached entry matches it.
    pub(crate) fn hit(&self, rank: usize, req: &Request) -> Option<u32> {
        let id = *self.by_name.get(&req.name)?;
        let resp = self.entries.get(&id)?;
        matches(resp, rank, req).then_some(id)
    }

    /// The cached response with this id.
    pub(crate) fn get(&self, id: u32) -> Option<&Response> {
        self.entries.get(&id)
    }

    /// Applies an announced insertion (evictions first).
    pub(crate) fn apply(&mut self, ins: &CacheInsert, resp: &Response) {
        for id in &ins.evict {
            if let Some(old) = self.entries.remove(id) {
                let name = &old.tensors[0].name;
                if self.by_name.get(name) == Some(id) {
                    self.by_name.remove(name);
                }
            }
        }
        if cacheable(resp) {
            self.by_name.insert(resp.tensors[0].name.clone(), ins.id);
            self.entries.insert(ins.id, resp.clone());
        }
    }

    /// Number of live entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A live entry at the coordinator.
#[derive(Debug)]
struct Live {
    resp: Response,
    tick: u64,
}

/// The coordinator's cache: live entries with LRU order, plus tombstones of retired ids.
#[derive(Debug)]
pub(crate) struct ResponseCache {
    capacity: usize,
    /// Autotune turned the cache off: responses travel in full and the entries stay as they
    /// are (every rank's mirror with them) until it is turned back on.
    disabled: bool,
    next_id: u32,
    tick: u64,
    live: FastMap<u32, Live>,
    by_name: FastMap<String, u32>,
    lru: BTreeMap<u64, u32>,
    tombstones: FastMap<u32, Response>,
    /// Retired ids with the epoch every rank must reach before they are forgotten (ascending).
    retire_order: VecDeque<(u64, u32)>,
}

impl ResponseCache {
    /// An empty cache holding at most `capacity` live entries (0 disables caching).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            disabled: false,
            next_id: 0,
            tick: 0,
            live: FastMap::default(),
            by_name: FastMap::default(),
            lru: BTreeMap::new(),
            tombstones: FastMap::default(),
            retire_order: VecDeque::new(),
        }
    }

    /// Turns the cache's use on or off (autotune); the entries are kept.
    pub(crate) fn set_enabled(&mut self, on: bool) {
        self.disabled = !on;
    }

    /// The request `rank` meant by `id`, from a live entry or a tombstone.
    pub(crate) fn request(&self, id: u32, rank: usize) -> Option<Request> {
        let resp = self
            .live
            .get(&id)
            .map(|l| &l.resp)
            .or_else(|| self.tombstones.get(&id))?;
        Some(request_for(resp, rank))
    }

    /// Decides how `resp` travels in the `DownMsg` with sequence number `seq`: as the id of an
    /// equal live entry, or in full (stored under a new id when cacheable).
    pub(crate) fn decide(&mut self, resp: Response, seq: u64) -> DownItem {
        if self.capacity == 0 || self.disabled || !cacheable(&resp) {
            return DownItem::Full {
                response: resp,
                cache: None,
            };
        }
        let name = &resp.tensors[0].name;
        if let Some(&id) = self.by_name.get(name)
            && self.live.get(&id).is_some_and(|l| l.resp == resp)
        {
            self.touch(id);
            return DownItem::Cached(id);
        }
        if self.next_id == u32::MAX {
            // Ids are never reused; after four billion entries we simply stop caching.
            return DownItem::Full {
                response: resp,
                cache: None,
            };
        }
        let mut evict = Vec::new();
        if let Some(old) = self.by_name.get(name).copied() {
            self.retire(old, seq);
            evict.push(old);
        }
        while self.live.len() >= self.capacity {
            let Some((_, victim)) = self.lru.pop_first() else {
                break;
            };
            self.retire(victim, seq);
            evict.push(victim);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.tick += 1;
        self.lru.insert(self.tick, id);
        self.by_name.insert(name.clone(), id);
        self.live.insert(
            id,
            Live {
                resp: resp.clone(),
                tick: self.tick,
            },
        );
        DownItem::Full {
            response: resp,
            cache: Some(CacheInsert { id, evict }),
        }
    }

    /// Marks `id` most recently used.
    fn touch(&mut self, id: u32) {
        if let Some(l) = self.live.get_mut(&id) {
            self.lru.remove(&l.tick);
            self.tick += 1;
            l.tick = self.tick;
            self.lru.insert(self.tick, id);
        }
    }

    /// Moves a live entry to the tombstones; retired by the `DownMsg` numbered `seq`.
    fn retire(&mut self, id: u32, seq: u64) {
        if let Some(l) = self.live.remove(&id) {
            self.lru.remove(&l.tick);
            let name = &l.resp.tensors[0].name;
            if self.by_name.get(name) == Some(&id) {
                self.by_name.remove(name);
            }
            self.tombstones.insert(id, l.resp);
            self.retire_order.push_back((seq + 1, id));
        }
    }

    /// Forgets tombstones that no rank can still refer to: every rank has reported an epoch at
    /// or past the message that retired them.
    pub(crate) fn reclaim(&mut self, min_epoch: u64) {
        while let Some(&(needed, id)) = self.retire_order.front() {
            if needed > min_epoch {
                break;
            }
            self.retire_order.pop_front();
            self.tombstones.remove(&id);
        }
    }

    /// True when tombstones are waiting for ranks to catch up.
    pub(crate) fn has_tombstones(&self) -> bool {
        !self.retire_order.is_empty()
    }

    /// Number of (live, tombstoned) entries.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.live.len(), self.tombstones.len())
    }
}
