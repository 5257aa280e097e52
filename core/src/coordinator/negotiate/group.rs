//! Groups: names a rank submitted as one unit (`grouped_allreduce` and friends).
//!
//! How it works: each rank declares its group (its own id and the member names) when the group
//! arrives, as one `UpItem::Group`. When a grouped name becomes ready on every rank it is held
//! until every member of its group is ready too; then the members are answered back to back, in
//! the lowest submitting rank's order, under one release number, so fusion sees them together
//! and the whole group travels in one `DownMsg`. A rank that submitted the name alone counts as a
//! group of one, so a one-tensor group agrees with a plain submission.
//!
//! The ranks must have grouped the same names. When they did not, the name that became ready,
//! every name of every group it is in, and transitively the names of those names' groups, are
//! failed at once on every rank with one error naming the ranks and their groups; nothing waits
//! for a member that some rank will never send. A stalled member that the stall inspector fails
//! takes its group with it the same way.

use std::fmt::Write as _;
use std::time::Instant;

use super::{MessageTable, Pending, Ready, rank_list};
use crate::coordinator::message::{Response, ResponseError};
use crate::fasthash::{FastMap, FastSet};

/// Each rank's declared groups: (rank, the rank's group id) → member names in submission order.
#[derive(Debug, Default)]
pub(crate) struct GroupTable {
    decls: FastMap<(usize, u64), Vec<String>>,
}

impl GroupTable {
    /// The members of `rank`'s group `id`.
    fn members(&self, rank: usize, id: u64) -> Option<&[String]> {
        self.decls.get(&(rank, id)).map(Vec::as_slice)
    }
}

/// At most this many member names are spelled out in an error.
const SHOWN: usize = 4;

/// "2 tensors [a, b]" or "100 tensors [a, b, c, d, …]".
fn show_members(names: &[String]) -> String {
    let mut s = format!(
        "{} tensor{} [",
        names.len(),
        if names.len() == 1 { "" } else { "s" }
    );
    for (i, n) in names.iter().take(SHOWN).enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(n);
    }
    if names.len() > SHOWN {
        s.push_str(", …");
    }
    s.push(']');
    s
}

impl MessageTable {
    /// Records that `rank` submitted `names` as its group `id` (before the members themselves).
    /// Returns false when the rank already has a live group with this id (a protocol error; the
    /// new declaration replaces the old).
    pub(crate) fn declare_group(&mut self, rank: usize, id: u64, names: Vec<String>) -> bool {
        self.groups.decls.insert((rank, id), names).is_none()
    }

    /// Each submitting rank's group for `name` (a plain submission is a group of itself).
    fn member_lists(&self, name: &str, p: &Pending) -> Vec<(u32, Vec<String>)> {
        p.slots
            .iter()
            .enumerate()
            .filter_map(|(r, s)| {
                let q = s.as_ref()?;
                let own = || vec![name.to_owned()];
                let names = match q.group {
                    Some(g) => self
                        .groups
                        .members(r, g.id)
                        .map_or_else(own, <[String]>::to_vec),
                    None => own(),
                };
                Some((r as u32, names))
            })
            .collect()
    }

    /// `name` is ready on every rank: answer it now, hold it for its group, release its whole
    /// group, or fail the groups the ranks disagree about.
    pub(super) fn on_ready(&mut self, now: Instant, name: &str, out: &mut Ready) {
        let Some(p) = self.pending.get(name) else {
            return;
        };
        if p.slots.iter().flatten().all(|q| q.group.is_none()) {
            self.answer(now, name, out, None);
            return;
        }
        let lists = self.member_lists(name, p);
        if let Some(why) = disagreement(&lists) {
            self.fail_groups(now, name, "group", why.0, why.1, out);
            return;
        }
        let members = lists[0].1.clone();
        // Each rank's group id for this name: every member must be in that same group on that
        // rank (a rank cannot hold one name twice, so this only catches a corrupt stream).
        let ids: Vec<Option<u64>> = p
            .slots
            .iter()
            .map(|s| s.as_ref().and_then(|q| q.group).map(|g| g.id))
            .collect();
        let mut all_ready = true;
        for m in &members {
            let Some(mp) = self.pending.get(m.as_str()) else {
                let why = format!("member '{m}' of its group is missing on the coordinator");
                self.fail_groups(now, name, "group", why, Vec::new(), out);
                return;
            };
            let same = mp.slots.iter().zip(&ids).all(|(s, id)| {
                s.as_ref()
                    .is_none_or(|q| q.group.map(|g| g.id) == *id || id.is_none())
            });
            if !same {
                let why = format!("member '{m}' of its group was submitted in another group");
                self.fail_groups(now, name, "group", why, Vec::new(), out);
                return;
            }
            all_ready &= self.is_ready(m);
        }
        if !all_ready {
            return;
        }
        let release = self.next_release;
        self.next_release += 1;
        for (r, id) in ids.iter().enumerate() {
            if let Some(id) = id {
                self.groups.decls.remove(&(r, *id));
            }
        }
        for m in &members {
            self.answer(now, m, out, Some(release));
        }
    }

    /// Fails `origin` and every pending name its groups reach (transitively, over every rank's
    /// groups) with one error each; requests deferred to those names' next rounds are replayed.
    pub(crate) fn fail_groups(
        &mut self,
        now: Instant,
        origin: &str,
        field: &str,
        why: String,
        ranks: Vec<u32>,
        out: &mut Ready,
    ) {
        let mut order: Vec<String> = vec![origin.to_owned()];
        let mut seen: FastSet<String> = order.iter().cloned().collect();
        let mut i = 0;
        while i < order.len() {
            if let Some(p) = self.pending.get(order[i].as_str()) {
                for (r, s) in p.slots.iter().enumerate() {
                    let Some(g) = s.as_ref().and_then(|q| q.group) else {
                        continue;
                    };
                    if let Some(names) = self.groups.decls.remove(&(r, g.id)) {
                        for n in names {
                            if seen.insert(n.clone()) {
                                order.push(n);
                            }
                        }
                    }
                }
            }
            i += 1;
        }
        for n in order {
            let Some(p) = self.pending.remove(n.as_str()) else {
                continue;
            };
            let Some(reference) = p.slots.iter().flatten().next() else {
                continue;
            };
            let message = if n == origin {
                format!("tensor '{n}': {why}")
            } else {
                format!("tensor '{n}': grouped with tensor '{origin}': {why}")
            };
            let error = ResponseError {
                field: field.to_owned(),
                message,
                ranks: ranks.clone(),
            };
            let resp = Response::for_request(n.clone(), reference, Some(error));
            out.push(resp, None);
            for (rank, req) in p.deferred {
                self.submit(now, rank, req, out);
            }
        }
    }
}

/// The message and the ranks at fault when the ranks' groups for one name differ (compared as
/// sets); ranks are blamed when their group differs from the lowest submitting rank's.
fn disagreement(lists: &[(u32, Vec<String>)]) -> Option<(String, Vec<u32>)> {
    let keys: Vec<Vec<&str>> = lists
        .iter()
        .map(|(_, v)| {
            let mut k: Vec<&str> = v.iter().map(String::as_str).collect();
            k.sort_unstable();
            k
        })
        .collect();
    if keys.iter().all(|k| *k == keys[0]) {
        return None;
    }
    let mut distinct: Vec<(usize, Vec<u32>)> = Vec::new();
    for (i, (rank, _)) in lists.iter().enumerate() {
        match distinct.iter_mut().find(|(j, _)| keys[*j] == keys[i]) {
            Some(d) => d.1.push(*rank),
            None => distinct.push((i, vec![*rank])),
        }
    }
    let mut msg = String::from("the ranks grouped it differently: ");
    for (k, (i, ranks)) in distinct.iter().enumerate() {
        if k > 0 {
            msg.push_str(", ");
        }
        let _ = write!(
            msg,
            "{} grouped {}",
            rank_list(ranks),
            show_members(&lists[*i].1)
        );
    }
    let mut blamed: Vec<u32> = distinct[1..]
        .iter()
        .flat_map(|d| d.1.iter().copied())
        .collect();
    blamed.sort_unstable();
    Some((msg, blamed))
}
