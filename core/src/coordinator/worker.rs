//! The per-rank half of the protocol: encodes local requests for the coordinator and expands the
//! coordinator's messages into plans, keeping the rank's copy of the response cache in step.

use super::cache::CacheMirror;
use super::fusion;
use super::message::{DownItem, DownMsg, Plan, ProtocolError, Request, UpItem, UpMsg};
use crate::types::CollectiveKind;

/// One rank's protocol state.
#[derive(Debug)]
pub struct Worker {
    rank: usize,
    size: usize,
    /// Whether this rank sends cache ids; it mirrors announced entries regardless, because the
    /// coordinator's messages may refer to them.
    use_cache: bool,
    /// The cache has a capacity, so autotune may turn its use on.
    cache_exists: bool,
    cache: CacheMirror,
    applied: u64,
}

impl Worker {
    /// A worker for `rank` of `size`; `cache_capacity` 0 makes it always send full requests.
    pub fn new(rank: usize, size: usize, cache_capacity: usize) -> Self {
        Self {
            rank,
            size,
            use_cache: cache_capacity > 0,
            cache_exists: cache_capacity > 0,
            cache: CacheMirror::default(),
            applied: 0,
        }
    }

    /// Autotune: sends cache ids (when the cache exists) or always full requests from now on.
    pub fn set_use_cache(&mut self, on: bool) {
        self.use_cache = on && self.cache_exists;
    }

    /// This worker's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks in the job.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Number of coordinator messages applied so far (the epoch reported upstream).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Number of live cache entries this rank holds.
    pub fn cached_entries(&self) -> usize {
        self.cache.len()
    }

    /// Encodes newly ready local requests (and join/shutdown flags) into one message for the
    /// coordinator, sending a cached request as a compact cache id instead of the full request.
    /// Consecutive requests with the same group tag travel as one [`UpItem::Group`]; the queue
    /// hands a group over whole and in order, so a group is never split across messages.
    pub fn submit(&mut self, reqs: Vec<Request>, shutdown: bool) -> UpMsg {
        let mut items: Vec<UpItem> = Vec::with_capacity(reqs.len());
        let mut open: Option<(u64, Vec<UpItem>)> = None;
        for req in reqs {
            let tag = req.group.map(|g| g.id);
            let item = self.encode(req);
            match (tag, &mut open) {
                (Some(id), Some((open_id, members))) if *open_id == id => members.push(item),
                (Some(id), _) => {
                    if let Some((id, members)) = open.take() {
                        items.push(UpItem::Group { id, items: members });
                    }
                    open = Some((id, vec![item]));
                }
                (None, _) => {
                    if let Some((id, members)) = open.take() {
                        items.push(UpItem::Group { id, items: members });
                    }
                    items.push(item);
                }
            }
        }
        if let Some((id, members)) = open {
            items.push(UpItem::Group { id, items: members });
        }
        UpMsg {
            epoch: self.applied,
            items,
            shutdown,
        }
    }

    /// One request as a cache id when the cache holds it, else in full.
    fn encode(&self, req: Request) -> UpItem {
        let hit = (self.use_cache && req.kind != CollectiveKind::Join)
            .then(|| self.cache.hit(self.rank, &req))
            .flatten();
        match hit {
            Some(id) => UpItem::Cached(id),
            None => UpItem::Full(req),
        }
    }

    /// Applies one coordinator message (updating the response cache exactly as every other rank
    /// does) and returns the plan.
    pub fn receive(&mut self, msg: DownMsg) -> Result<Plan, ProtocolError> {
        if msg.seq != self.applied {
            return Err(ProtocolError::OutOfOrder {
                expected: self.applied,
                got: msg.seq,
            });
        }
        let mut responses = Vec::with_capacity(msg.groups.len());
        for group in msg.groups {
            let mut parts = Vec::with_capacity(group.len());
            for item in group {
                let resp = match item {
                    DownItem::Cached(id) => self
                        .cache
                        .get(id)
                        .cloned()
                        .ok_or(ProtocolError::UnknownCacheId(id))?,
                    DownItem::Full { response, cache } => {
                        if let Some(ins) = &cache {
                            self.cache.apply(ins, &response);
                        }
                        response
                    }
                };
                if resp.tensors.is_empty() {
                    return Err(ProtocolError::BadGroup("a response without tensors".into()));
                }
                parts.push(resp);
            }
            if !fusion::fusable(&parts) {
                return Err(ProtocolError::BadGroup(format!(
                    "{} responses that are not matching allreduces",
                    parts.len()
                )));
            }
            responses.push(fusion::merge(parts));
        }
        self.applied += 1;
        Ok(Plan {
            responses,
            shutdown: msg.shutdown,
        })
    }
}
