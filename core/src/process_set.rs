//! Process sets: collectives among a subset of the job's ranks (Horovod's `ProcessSet`).
//!
//! # Design overview
//!
//! A process set is a job of its own inside the job. Its members connect a backend of their
//! own through the job's rendezvous store (under the set's key prefix), numbered `0..n` in
//! ascending global rank, and run an [`Engine`] over it: its own coordinator (the set's lowest
//! rank), response cache, fusion buffer and executor. So two sets never share a byte stream,
//! a waker or a background thread, sets with disjoint ranks run at once without waiting for
//! each other, and a set whose ranks share a host gets shared memory exactly as a job of that
//! shape would. The global set (id 0) is the job's own engine.
//!
//! Adding and removing a set is collective over the global set: every rank contributes its
//! proposal to one fixed-size allgather, so every rank sees every other's, decides the same
//! thing (the same id, or the same error naming the ranks that disagree) and nobody waits for
//! a rank that refused locally.
//!
//! Errors from a set's engine name the set and give ranks as global ranks (see
//! `SetView::renumber`); a transport's own text ("connection to rank 1 lost") numbers the
//! set's members `0..n` and is prefixed with the set's member list so it can be read.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::KeepAlive;
use crate::config::Topology;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// The id of the global process set (every rank of the job).
pub const GLOBAL_ID: u32 = 0;

/// One process set as every rank knows it: its id and its members (global ranks, ascending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSet {
    /// The set's id (0 for the global set), the same on every rank.
    pub id: u32,
    /// Members, as global ranks in ascending order.
    pub ranks: Vec<usize>,
}

impl ProcessSet {
    /// This set's rank of global rank `rank`, if it is a member.
    pub fn rank_of(&self, rank: usize) -> Option<usize> {
        self.ranks.binary_search(&rank).ok()
    }

    /// Number of members.
    pub fn size(&self) -> usize {
        self.ranks.len()
    }
}

/// How a set's engine turns its own (set-local) rank numbers back into global ones.
#[derive(Debug, Clone)]
pub(crate) struct SetView {
    id: u32,
    ranks: Vec<usize>,
}

impl SetView {
    pub(crate) fn new(set: &ProcessSet) -> Self {
        Self {
            id: set.id,
            ranks: set.ranks.clone(),
        }
    }

    fn global(&self, local: usize) -> usize {
        self.ranks.get(local).copied().unwrap_or(local)
    }

    fn context(&self) -> String {
        format!(
            "in process set {} (global ranks {:?}, numbered 0..{} inside it)",
            self.id,
            self.ranks,
            self.ranks.len()
        )
    }

    /// `err` as the user sees it: the reporting rank and the peer as global ranks, and the
    /// set named in the detail.
    pub(crate) fn renumber(&self, err: Error) -> Error {
        let ctx = self.context();
        match err {
            Error::Transport {
                rank,
                op,
                tensor,
                cause,
                peer,
                source,
            } => Error::Transport {
                rank: self.global(rank),
                op: format!("{op} {ctx}"),
                tensor,
                cause,
                peer: peer.map(|p| self.global(p)),
                source,
            },
            Error::Mismatch {
                rank,
                tensor,
                field,
                detail,
            } => Error::Mismatch {
                rank: self.global(rank),
                tensor,
                field,
                detail: format!("{detail} ({ctx})"),
            },
            Error::InvalidArgument {
                rank,
                tensor,
                detail,
            } => Error::InvalidArgument {
                rank: self.global(rank),
                tensor,
                detail: format!("{detail} ({ctx})"),
            },
            Error::ShutDown { rank, reason } => Error::ShutDown {
                rank: self.global(rank),
                reason: Some(match reason {
                    Some(r) => format!("{r} ({ctx})"),
                    None => ctx,
                }),
            },
            Error::Rendezvous { rank, detail } => Error::Rendezvous {
                rank: self.global(rank),
                detail: format!("{detail} ({ctx})"),
            },
            other => other,
        }
    }
}

/// The topology of `members` (global ranks, ascending) as a job of its own, for the member
/// `me`, given every global rank's host key (`hosts[r]`: ranks with equal keys share a host).
pub(crate) fn set_topology(members: &[usize], hosts: &[u64], me: usize) -> Topology {
    let rank = members.binary_search(&me).expect("a member");
    let host = hosts[me];
    let local: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&r| hosts[r] == host)
        .collect();
    let local_rank = local.iter().position(|&r| r == me).expect("on its host");
    // Horovod's cross rank: the position among the members with the same local rank.
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut same_local = Vec::new();
    for &r in members {
        let k = seen.entry(hosts[r]).or_insert(0);
        if *k == local_rank {
            same_local.push(r);
        }
        *k += 1;
    }
    Topology {
        rank,
        size: members.len(),
        local_rank,
        local_size: local.len(),
        cross_rank: same_local.iter().position(|&r| r == me).expect("itself"),
        cross_size: same_local.len(),
    }
}

/// What one rank asks for in an add or remove, as it travels in the agreement allgather.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Proposal {
    /// Add a set of these ranks (already sorted and checked by the proposer).
    Add(Vec<usize>),
    /// Add, but the proposer found its own list invalid (it says why locally, and everyone
    /// reports that rank as the reason).
    BadAdd(String),
    /// Remove set `id`; `in_flight` operations of this rank are still running on it.
    Remove { id: u32, in_flight: usize },
}

const ADD: u64 = 1;
const BAD_ADD: u64 = 2;
const REMOVE: u64 = 3;
/// Words ahead of the rank list: host key, kind, id / count, length.
const HEADER: usize = 4;

impl Proposal {
    /// The fixed-size wire form for a job of `size` ranks: `[host, kind, a, n, ranks..]`,
    /// padded, so every rank's contribution has the same length.
    pub(crate) fn encode(&self, host: u64, size: usize) -> Vec<u64> {
        let mut w = vec![u64::MAX; HEADER + size];
        w[0] = host;
        match self {
            Self::Add(ranks) => {
                w[1] = ADD;
                w[2] = 0;
                w[3] = ranks.len() as u64;
                for (slot, &r) in w[HEADER..].iter_mut().zip(ranks) {
                    *slot = r as u64;
                }
            }
            Self::BadAdd(_) => {
                w[1] = BAD_ADD;
                w[2] = 0;
                w[3] = 0;
            }
            Self::Remove { id, in_flight } => {
                w[1] = REMOVE;
                w[2] = u64::from(*id);
                w[3] = *in_flight as u64;
            }
        }
        w
    }

    /// Splits an allgather of `size` contributions into (host keys, proposals); a proposer's
    /// reason for a bad add stays on that rank, so it reads here as "invalid".
    pub(crate) fn decode_all(words: &[u64], size: usize) -> Result<(Vec<u64>, Vec<Self>)> {
        let per = HEADER + size;
        if words.len() != per * size {
            return Err(Error::Bug(format!(
                "process-set agreement: {} words from {size} ranks",
                words.len()
            )));
        }
        let mut hosts = Vec::with_capacity(size);
        let mut props = Vec::with_capacity(size);
        for w in words.chunks(per) {
            hosts.push(w[0]);
            props.push(match w[1] {
                ADD => {
                    let n = (w[3] as usize).min(size);
                    Self::Add(w[HEADER..HEADER + n].iter().map(|&r| r as usize).collect())
                }
                REMOVE => Self::Remove {
                    id: u32::try_from(w[2]).unwrap_or(u32::MAX),
                    in_flight: w[3] as usize,
                },
                _ => Self::BadAdd("its ranks are invalid (it says why)".into()),
            });
        }
        Ok((hosts, props))
    }
}

/// Sorts `ranks` and checks them against a job of `size` ranks.
pub(crate) fn normalize(ranks: &[usize], size: usize) -> std::result::Result<Vec<usize>, String> {
    if ranks.is_empty() {
        return Err("a process set needs at least one rank".into());
    }
    let mut sorted = ranks.to_vec();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("rank {} is listed twice in {ranks:?}", w[0]));
    }
    if let Some(&bad) = sorted.iter().find(|&&r| r >= size) {
        return Err(format!(
            "rank {bad} is not in this job (ranks are 0..{size}) in {ranks:?}"
        ));
    }
    Ok(sorted)
}

/// What every rank decides from everyone's add proposals: the agreed members, or the same
/// error text on every rank.
pub(crate) fn agree_add(props: &[Proposal]) -> std::result::Result<Vec<usize>, String> {
    let bad: Vec<usize> = (0..props.len())
        .filter(|&r| matches!(props[r], Proposal::BadAdd(_)))
        .collect();
    if !bad.is_empty() {
        return Err(format!(
            "rank(s) {bad:?} gave an invalid list of ranks (each says why in its own error)"
        ));
    }
    if let Some(r) = props.iter().position(|p| !matches!(p, Proposal::Add(_))) {
        return Err(format!(
            "rank {r} called remove_process_set while the others called add_process_set"
        ));
    }
    let lists: Vec<&Vec<usize>> = props
        .iter()
        .map(|p| match p {
            Proposal::Add(l) => l,
            _ => unreachable!("checked above"),
        })
        .collect();
    if lists.iter().any(|l| *l != lists[0]) {
        let each: Vec<String> = lists
            .iter()
            .enumerate()
            .map(|(r, l)| format!("rank {r}: {l:?}"))
            .collect();
        return Err(format!(
            "ranks disagree on the new process set ({}); every rank must call \
             add_process_set with the same ranks, in the same order of calls",
            each.join(", ")
        ));
    }
    Ok(lists[0].clone())
}

/// What every rank decides from everyone's remove proposals: the agreed id, or the same error.
pub(crate) fn agree_remove(props: &[Proposal]) -> std::result::Result<u32, String> {
    let mut ids = Vec::with_capacity(props.len());
    for (r, p) in props.iter().enumerate() {
        match p {
            Proposal::Remove { id, .. } => ids.push(*id),
            _ => {
                return Err(format!(
                    "rank {r} called add_process_set while the others called remove_process_set"
                ));
            }
        }
    }
    if ids.iter().any(|&id| id != ids[0]) {
        return Err(format!(
            "ranks disagree on which process set to remove (ids by rank: {ids:?})"
        ));
    }
    let busy: Vec<String> = props
        .iter()
        .enumerate()
        .filter_map(|(r, p)| match p {
            Proposal::Remove { in_flight, .. } if *in_flight > 0 => {
                Some(format!("rank {r}: {in_flight}"))
            }
            _ => None,
        })
        .collect();
    if !busy.is_empty() {
        return Err(format!(
            "process set {} still has operations in flight ({}); wait for them before \
             removing it",
            ids[0],
            busy.join(", ")
        ));
    }
    Ok(ids[0])
}

/// A set this rank belongs to: its engine, and what its backend needs kept alive.
pub(crate) struct Member {
    pub(crate) engine: Arc<Engine>,
    pub(crate) _keep_alive: KeepAlive,
}

/// Every process set of the job, as this rank knows it (the same table on every rank).
#[derive(Default)]
pub(crate) struct Table {
    sets: BTreeMap<u32, (ProcessSet, Option<Member>)>,
    next_id: u32,
}

impl Table {
    pub(crate) fn new(size: usize) -> Self {
        let mut t = Self {
            sets: BTreeMap::new(),
            next_id: 1,
        };
        t.sets.insert(
            GLOBAL_ID,
            (
                ProcessSet {
                    id: GLOBAL_ID,
                    ranks: (0..size).collect(),
                },
                None,
            ),
        );
        t
    }

    /// The id the next added set gets (the same on every rank: adds are collective).
    pub(crate) fn next_id(&self) -> u32 {
        self.next_id
    }

    /// The set with exactly these members, if one exists.
    pub(crate) fn find(&self, ranks: &[usize]) -> Option<u32> {
        self.sets
            .values()
            .find(|(s, _)| s.ranks == ranks)
            .map(|(s, _)| s.id)
    }

    pub(crate) fn insert(&mut self, set: ProcessSet, member: Option<Member>) {
        self.next_id = self.next_id.max(set.id + 1);
        self.sets.insert(set.id, (set, member));
    }

    pub(crate) fn get(&self, id: u32) -> Option<&ProcessSet> {
        self.sets.get(&id).map(|(s, _)| s)
    }

    pub(crate) fn engine(&self, id: u32) -> Option<Arc<Engine>> {
        self.sets
            .get(&id)
            .and_then(|(_, m)| m.as_ref().map(|m| m.engine.clone()))
    }

    pub(crate) fn remove(&mut self, id: u32) -> Option<(ProcessSet, Option<Member>)> {
        self.sets.remove(&id)
    }

    pub(crate) fn all(&self) -> Vec<ProcessSet> {
        self.sets.values().map(|(s, _)| s.clone()).collect()
    }

    /// Takes every set's member engine but the global set's, highest id first.
    pub(crate) fn drain_members(&mut self) -> Vec<Member> {
        let mut out = Vec::new();
        for (_, (_, m)) in self.sets.iter_mut().rev() {
            if let Some(m) = m.take() {
                out.push(m);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
