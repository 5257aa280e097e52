//! Tensor fusion: merging small ready allreduces into one collective.
//!
//! How it works: walk the ready responses in order. Each response not yet placed opens a group.
//! If it is a successful allreduce, look ahead for later allreduces with the same dtype, op,
//! prescale and postscale and add each one while the group's bytes stay within the threshold.
//! The look-ahead may skip responses that do not match (as Horovod does), but it stops at a
//! Barrier or Join (they order everything around them) and never takes a response whose name
//! appears in a skipped response or already in the group, so two rounds of one name always run
//! in their original order. A single tensor above the threshold runs alone.
//!
//! A group arrives with its members back to back, so the look-ahead fuses it like any run of
//! ready tensors. With group fusion disabled (`HOROVOD_DISABLE_GROUP_FUSION`, as in Horovod) a
//! response fuses only with responses of the same group release, and ungrouped ones only with
//! ungrouped ones.

use super::message::Response;
use crate::fasthash::FastSet;
use crate::types::CollectiveKind;

/// The key fused responses must share. Adasum is never fused: its combination is per tensor
/// (a dot product and norms each), and the collectives take one buffer, so a fused buffer
/// would be combined as one vector.
fn fusion_key(r: &Response) -> Option<(crate::types::DataType, crate::types::ReduceOp, u64, u64)> {
    (r.kind == CollectiveKind::Allreduce
        && r.error.is_none()
        && r.op != crate::types::ReduceOp::Adasum)
        .then(|| (r.dtype, r.op, r.prescale.to_bits(), r.postscale.to_bits()))
}

/// True for responses the look-ahead must not move anything across.
fn is_fence(r: &Response) -> bool {
    matches!(r.kind, CollectiveKind::Barrier | CollectiveKind::Join)
}

/// Splits `ready` (single-tensor responses in ready order) into groups of indices; each group
/// runs as one collective, groups in the returned order. `isolate` holds each response's group
/// release when groups must not fuse with anything outside themselves.
pub(crate) fn plan(
    ready: &[Response],
    isolate: Option<&[Option<u64>]>,
    threshold: u64,
) -> Vec<Vec<usize>> {
    let release = |i: usize| isolate.and_then(|g| g.get(i).copied().flatten());
    let mut used = vec![false; ready.len()];
    let mut groups = Vec::new();
    for i in 0..ready.len() {
        if used[i] {
            continue;
        }
        used[i] = true;
        let mut group = vec![i];
        if let Some(key) = fusion_key(&ready[i]) {
            let mut bytes = ready[i].bytes();
            let mut names: FastSet<&str> =
                ready[i].tensors.iter().map(|t| t.name.as_str()).collect();
            let mut skipped: FastSet<&str> = FastSet::default();
            for j in i + 1..ready.len() {
                if bytes >= threshold {
                    break;
                }
                if used[j] {
                    continue;
                }
                let cand = &ready[j];
                if is_fence(cand) {
                    break;
                }
                let fits = bytes
                    .checked_add(cand.bytes())
                    .is_some_and(|b| b <= threshold);
                let free = cand.tensors.iter().all(|t| {
                    !skipped.contains(t.name.as_str()) && !names.contains(t.name.as_str())
                });
                let same_group = isolate.is_none() || release(j) == release(i);
                if fusion_key(cand) == Some(key) && fits && free && same_group {
                    used[j] = true;
                    group.push(j);
                    bytes += cand.bytes();
                    names.extend(cand.tensors.iter().map(|t| t.name.as_str()));
                } else {
                    skipped.extend(cand.tensors.iter().map(|t| t.name.as_str()));
                }
            }
        }
        groups.push(group);
    }
    groups
}

/// Merges a group of fusable single-tensor responses into one response (the first one's
/// parameters, every tensor in group order).
pub(crate) fn merge(mut parts: Vec<Response>) -> Response {
    let mut first = parts.remove(0);
    for p in parts {
        first.tensors.extend(p.tensors);
    }
    first
}

/// True when `parts` may legally form one group (used by ranks to reject a corrupt stream).
pub(crate) fn fusable(parts: &[Response]) -> bool {
    match parts {
        [] => false,
        [_] => true,
        [first, rest @ ..] => {
            let key = fusion_key(first);
            key.is_some() && rest.iter().all(|r| fusion_key(r) == key)
        }
    }
}
