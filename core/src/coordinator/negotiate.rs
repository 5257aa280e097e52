//! The message table and the agreement checks.
//!
//! The table maps each pending name to the request of every rank that has submitted it. A name
//! is ready when every rank has either submitted it or joined; it is then removed from the table
//! and [`negotiate`]d into one [`Response`] — the agreed collective, or an error naming the
//! tensor, the field and each rank's value. Ready names leave in the order they became ready,
//! which is the order every rank will run them in. Names submitted in a group wait for each
//! other (`group.rs`): a group is answered as a whole, once every member is ready.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Instant;

use super::message::{Request, Response, ResponseError, TensorInfo};
use crate::fasthash::FastMap;
use crate::types::CollectiveKind;

mod group;

pub(crate) use group::GroupTable;

/// Responses that became ready, in ready order, each with the group release it belongs to
/// (`None` outside a group); fusion uses the release to keep groups apart when asked to.
#[derive(Debug, Default)]
pub(crate) struct Ready {
    pub(crate) responses: Vec<Response>,
    pub(crate) groups: Vec<Option<u64>>,
}

impl Ready {
    /// Appends one response.
    pub(crate) fn push(&mut self, resp: Response, group: Option<u64>) {
        self.responses.push(resp);
        self.groups.push(group);
    }

    /// True when nothing became ready.
    pub(crate) fn is_empty(&self) -> bool {
        self.responses.is_empty()
    }
}

/// A name submitted by some ranks but not yet by all.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Order of first submission; joins ready names in this order.
    pub(crate) serial: u64,
    /// When the first rank submitted it (for the stall inspector).
    pub(crate) first_seen: Instant,
    /// Each rank's request, if submitted.
    pub(crate) slots: Vec<Option<Request>>,
    /// Number of filled slots.
    submitted: usize,
    /// Requests for this name that arrived while the rank's slot was still full; they belong
    /// to the next round of the name and are replayed once this round is answered.
    deferred: VecDeque<(usize, Request)>,
    /// Stall warnings already issued for this round.
    pub(crate) warnings: u32,
}

/// Pending names, join state, and readiness.
#[derive(Debug)]
pub(crate) struct MessageTable {
    size: usize,
    pending: FastMap<String, Pending>,
    next_serial: u64,
    joined: Vec<bool>,
    joined_count: usize,
    /// The last rank that joined and the request it joined with.
    last_join: Option<(usize, Request)>,
    /// Every rank's declared groups.
    groups: GroupTable,
    /// Number of the next group release (what fusion tells groups apart by).
    next_release: u64,
}

impl MessageTable {
    /// An empty table for `size` ranks.
    pub(crate) fn new(size: usize) -> Self {
        Self {
            size,
            pending: FastMap::default(),
            next_serial: 0,
            joined: vec![false; size],
            joined_count: 0,
            last_join: None,
            groups: GroupTable::default(),
            next_release: 0,
        }
    }

    /// Records `req` from `rank`; responses for names that became ready are appended to `out`.
    pub(crate) fn submit(&mut self, now: Instant, rank: usize, req: Request, out: &mut Ready) {
        if req.kind == CollectiveKind::Join {
            self.join(now, rank, req, out);
            return;
        }
        if let Some(name) = self.file(now, rank, req) {
            self.on_ready(now, &name, out);
        }
    }

    /// Records a non-join `req` from `rank` without answering anything; returns its name when
    /// that became ready. A message's requests are all filed before any is answered, so a
    /// disagreement about a group sees every name the message brought.
    pub(crate) fn file(&mut self, now: Instant, rank: usize, req: Request) -> Option<String> {
        if !self.pending.contains_key(&req.name) {
            let pending = Pending {
                serial: self.next_serial,
                first_seen: now,
                slots: vec![None; self.size],
                submitted: 0,
                deferred: VecDeque::new(),
                warnings: 0,
            };
            self.next_serial += 1;
            self.pending.insert(req.name.clone(), pending);
        }
        let entry = self.pending.get_mut(&req.name)?;
        if entry.slots[rank].is_some() {
            entry.deferred.push_back((rank, req));
            return None;
        }
        let name = req.name.clone();
        entry.slots[rank] = Some(req);
        entry.submitted += 1;
        let ready = entry.submitted == self.size
            || (self.joined_count > 0
                && entry
                    .slots
                    .iter()
                    .zip(&self.joined)
                    .all(|(s, &j)| s.is_some() || j));
        ready.then_some(name)
    }

    /// Answers names [`Self::file`] reported ready, in that order (held back for their group
    /// where needed).
    pub(crate) fn answer_ready(&mut self, now: Instant, names: Vec<String>, out: &mut Ready) {
        for name in names {
            self.on_ready(now, &name, out);
        }
    }

    /// True when every rank has submitted `name` or joined.
    fn is_ready(&self, name: &str) -> bool {
        let Some(p) = self.pending.get(name) else {
            return false;
        };
        if p.submitted == self.size {
            return true;
        }
        self.joined_count > 0
            && p.slots
                .iter()
                .zip(&self.joined)
                .all(|(s, &j)| s.is_some() || j)
    }

    /// Removes a ready name, negotiates it, and replays requests deferred to its next round.
    fn answer(&mut self, now: Instant, name: &str, out: &mut Ready, group: Option<u64>) {
        let Some(p) = self.pending.remove(name) else {
            return;
        };
        out.push(negotiate(name, &p.slots, &self.joined), group);
        for (rank, req) in p.deferred {
            self.submit(now, rank, req, out);
        }
    }

    /// Marks `rank` joined; names now ready are answered (in first-submission order), and when
    /// every rank has joined the Join response is emitted and join state cleared.
    fn join(&mut self, now: Instant, rank: usize, req: Request, out: &mut Ready) {
        if !self.joined[rank] {
            self.joined[rank] = true;
            self.joined_count += 1;
        }
        self.last_join = Some((rank, req));
        let mut ready: Vec<(u64, String)> = self
            .pending
            .iter()
            .filter(|(name, _)| self.is_ready(name))
            .map(|(name, p)| (p.serial, name.clone()))
            .collect();
        ready.sort_unstable();
        for (_, name) in ready {
            self.on_ready(now, &name, out);
        }
        if self.joined_count == self.size {
            let (last, req) = self.last_join.take().unwrap_or((rank, Request::join()));
            out.push(
                Response {
                    kind: CollectiveKind::Join,
                    dtype: req.dtype,
                    op: req.op,
                    root: last as u32,
                    prescale: 1.0,
                    postscale: 1.0,
                    tensors: vec![TensorInfo::new(req.name, Vec::new())],
                    error: None,
                },
                None,
            );
            self.joined.iter_mut().for_each(|j| *j = false);
            self.joined_count = 0;
        }
    }

    /// Pending names and their state.
    pub(crate) fn pending(&self) -> impl Iterator<Item = (&String, &Pending)> {
        self.pending.iter()
    }

    /// One pending name.
    pub(crate) fn get(&self, name: &str) -> Option<&Pending> {
        self.pending.get(name)
    }

    /// Mutable access to one pending name.
    pub(crate) fn pending_mut(&mut self, name: &str) -> Option<&mut Pending> {
        self.pending.get_mut(name)
    }

    /// True when `rank` has joined.
    pub(crate) fn is_joined(&self, rank: usize) -> bool {
        self.joined[rank]
    }

    /// Number of pending names.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

/// "rank 3" or "ranks 0-2, 5": ranks in ascending order, runs collapsed.
pub(crate) fn rank_list(ranks: &[u32]) -> String {
    let mut s = String::from(if ranks.len() == 1 { "rank " } else { "ranks " });
    let mut i = 0;
    while i < ranks.len() {
        let mut j = i;
        while j + 1 < ranks.len() && ranks[j + 1] == ranks[j] + 1 {
            j += 1;
        }
        if i > 0 {
            s.push_str(", ");
        }
        let _ = if j > i + 1 {
            write!(s, "{}-{}", ranks[i], ranks[j])
        } else if j == i + 1 {
            write!(s, "{}, {}", ranks[i], ranks[j])
        } else {
            write!(s, "{}", ranks[i])
        };
        i = j + 1;
    }
    s
}

/// Compares one field across the submitted requests; on disagreement returns the error that
/// lists each distinct value with its ranks (first-seen order) and blames the ranks that differ
/// from the lowest submitting rank.
fn agree<'a, T: PartialEq>(
    name: &str,
    field: &str,
    subs: &[(u32, &'a Request)],
    key: impl Fn(&'a Request) -> T,
    show: impl Fn(&Request) -> String,
) -> Result<(), ResponseError> {
    let first = key(subs[0].1);
    if subs[1..].iter().all(|s| key(s.1) == first) {
        return Ok(());
    }
    let mut groups: Vec<(T, &Request, Vec<u32>)> = Vec::new();
    for &(rank, req) in subs {
        let k = key(req);
        match groups.iter_mut().find(|g| g.0 == k) {
            Some(g) => g.2.push(rank),
            None => groups.push((k, req, vec![rank])),
        }
    }
    if groups.len() <= 1 {
        return Ok(());
    }
    let values: Vec<String> = groups
        .iter()
        .map(|(_, req, ranks)| format!("{} {}", rank_list(ranks), show(req)))
        .collect();
    let mut ranks: Vec<u32> = groups[1..]
        .iter()
        .flat_map(|g| g.2.iter().copied())
        .collect();
    ranks.sort_unstable();
    Err(ResponseError {
        field: field.to_owned(),
        message: format!("tensor '{name}': {field} differs: {}", values.join(", ")),
        ranks,
    })
}

/// Shape with dim 0 shown as `*`, for kinds where only the other dims must agree.
fn show_tail(shape: &[u64]) -> String {
    let rest: Vec<String> = shape.iter().skip(1).map(u64::to_string).collect();
    if rest.is_empty() {
        "[*]".to_owned()
    } else {
        format!("[*, {}]", rest.join(", "))
    }
}

fn fail(name: &str, field: &str, ranks: Vec<u32>, what: String) -> ResponseError {
    ResponseError {
        field: field.to_owned(),
        message: format!("tensor '{name}': {what}"),
        ranks,
    }
}

/// Checks that the submitted requests agree and resolves them into one response. `slots` holds
/// each rank's request (None for a joined rank that has none); at least one is present.
pub(crate) fn negotiate(name: &str, slots: &[Option<Request>], joined: &[bool]) -> Response {
    let subs: Vec<(u32, &Request)> = slots
        .iter()
        .enumerate()
        .filter_map(|(r, s)| s.as_ref().map(|q| (r as u32, q)))
        .collect();
    let reference = subs[0].1;
    let mut resp = Response::for_request(name, reference, None);
    match check(name, &subs, slots, joined) {
        Ok(info) => resp.tensors = vec![info],
        Err(e) => resp.error = Some(e),
    }
    resp
}

/// The agreement checks, in a fixed order so that one error is reported per tensor.
fn check(
    name: &str,
    subs: &[(u32, &Request)],
    slots: &[Option<Request>],
    joined: &[bool],
) -> Result<TensorInfo, ResponseError> {
    use CollectiveKind as K;
    let size = slots.len() as u64;
    let reference = subs[0].1;
    let kind = reference.kind;
    agree(name, "kind", subs, |r| r.kind, |r| r.kind.to_string())?;
    let mut info = TensorInfo::new(name, reference.shape.clone());
    if kind == K::Barrier {
        return Ok(info);
    }
    agree(name, "dtype", subs, |r| r.dtype, |r| r.dtype.to_string())?;
    let reduces = matches!(kind, K::Allreduce | K::Reducescatter);
    if reduces {
        agree(name, "op", subs, |r| r.op, |r| r.op.to_string())?;
    }
    if kind == K::Broadcast {
        agree(name, "root", subs, |r| r.root, |r| r.root.to_string())?;
        let root = reference.root;
        if u64::from(root) >= size {
            let ranks = subs.iter().map(|s| s.0).collect();
            return Err(fail(
                name,
                "root",
                ranks,
                format!("broadcast root {root} is not a rank (size {size})"),
            ));
        }
        if slots[root as usize].is_none() {
            let what = format!("broadcast root {root} has joined and has no tensor");
            return Err(fail(name, "root", vec![root], what));
        }
    }
    if reduces {
        agree(
            name,
            "prescale",
            subs,
            |r| r.prescale.to_bits(),
            |r| r.prescale.to_string(),
        )?;
        agree(
            name,
            "postscale",
            subs,
            |r| r.postscale.to_bits(),
            |r| r.postscale.to_string(),
        )?;
    }
    match kind {
        K::Allgather | K::Alltoall => {
            let scalars: Vec<u32> = subs
                .iter()
                .filter(|s| s.1.shape.is_empty())
                .map(|s| s.0)
                .collect();
            if !scalars.is_empty() {
                let what = format!(
                    "{kind} needs at least one dimension; {} sent a scalar",
                    rank_list(&scalars)
                );
                return Err(fail(name, "shape", scalars, what));
            }
            agree(
                name,
                "shape",
                subs,
                |r| &r.shape[1..],
                |r| show_tail(&r.shape),
            )?;
        }
        _ => {
            agree(
                name,
                "shape",
                subs,
                |r| r.shape.as_slice(),
                |r| format!("{:?}", r.shape),
            )?;
            if kind == K::Reducescatter && reference.shape.is_empty() {
                let ranks = subs.iter().map(|s| s.0).collect();
                return Err(fail(
                    name,
                    "shape",
                    ranks,
                    "reducescatter needs at least one dimension".into(),
                ));
            }
        }
    }
    let missing: Vec<u32> = slots
        .iter()
        .enumerate()
        .filter(|(r, s)| s.is_none() && joined.get(*r).copied().unwrap_or(false))
        .map(|(r, _)| r as u32)
        .collect();
    match kind {
        // Horovod refuses these while any rank is joined: a joined rank has no rows to give,
        // and running without them would hand every rank a silently shorter result.
        K::Allgather | K::Broadcast | K::Reducescatter if !missing.is_empty() => {
            let what = format!(
                "{kind} cannot run while {} joined without it (join only supports \
                 allreduce and barrier)",
                rank_list(&missing)
            );
            return Err(fail(name, "join", missing, what));
        }
        K::Allgather => {
            info.first_dims = slots
                .iter()
                .map(|s| s.as_ref().map_or(0, |q| q.shape[0]))
                .collect();
        }
        K::Alltoall => {
            if !missing.is_empty() {
                let what = format!(
                    "alltoall cannot run while {} joined without it",
                    rank_list(&missing)
                );
                return Err(fail(name, "join", missing, what));
            }
            info.splits = alltoall_splits(name, subs, size)?;
        }
        _ => {}
    }
    Ok(info)
}

/// Resolves every rank's alltoall splits: explicit ones must have `size` entries summing to dim 0,
/// an empty one means an even split, which needs dim 0 divisible by `size`.
fn alltoall_splits(
    name: &str,
    subs: &[(u32, &Request)],
    size: u64,
) -> Result<Vec<Vec<u64>>, ResponseError> {
    let mut bad: Vec<(u32, String)> = Vec::new();
    let mut out = Vec::with_capacity(subs.len());
    for &(rank, req) in subs {
        let dim0 = req.shape[0];
        if req.splits.is_empty() {
            if dim0 % size != 0 {
                bad.push((
                    rank,
                    format!("dim 0 = {dim0} not divisible by {size} for an even split"),
                ));
            }
            out.push(vec![dim0 / size; size as usize]);
            continue;
        }
        let sum = req.splits.iter().try_fold(0u64, |a, &b| a.checked_add(b));
        if req.splits.len() as u64 != size {
            bad.push((
                rank,
                format!("{} splits for {size} ranks", req.splits.len()),
            ));
        } else if sum != Some(dim0) {
            bad.push((
                rank,
                format!("splits {:?} do not sum to dim 0 = {dim0}", req.splits),
            ));
        }
        out.push(req.splits.clone());
    }
    if bad.is_empty() {
        return Ok(out);
    }
    let ranks = bad.iter().map(|b| b.0).collect();
    let shown: Vec<String> = bad
        .iter()
        .map(|(r, why)| format!("rank {r} {why}"))
        .collect();
    Err(fail(
        name,
        "splits",
        ranks,
        format!("splits invalid: {}", shown.join(", ")),
    ))
}
