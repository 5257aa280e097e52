//! Adasum allreduce (`ReduceOp::Adasum`): Horovod's vector-halving, distance-doubling (VHDD)
//! recursion with Adasum's pairwise combination, over any [`Transport`].
//!
//! The pairwise combination of two vectors is
//! `a ⊕ b = (1 - a·b / 2|a|²) a + (1 - a·b / 2|b|²) b`, with a coefficient of 1 for a vector
//! whose squared norm is (nearly) zero, so a zero vector leaves the other unchanged. It is
//! computed per tensor: a fused buffer of several tensors gets one dot product and pair of
//! norms per tensor, as in Horovod.
//!
//! How it works. With `p` the largest power of two ≤ `size`:
//!
//! 1. *Fold* (only when `size` is not a power of two; Horovod refuses such sizes). Rank
//!    `r ≥ p` sends its vector to rank `r - p`, which combines the two whole vectors itself:
//!    `x[r-p] ⊕ x[r]`. Ranks `p..size` then wait for the result.
//! 2. *Reduce phase*, levels `d = 1, 2, 4, .. < p`. Rank `r` and its partner `r ^ d` hold the
//!    same element range; the lower keeps the first half (`len / 2` elements, as Horovod) and
//!    the upper the second, and each sends the other the half it gives up. Each now holds two
//!    pieces of one element range: its own group's vector and the partner group's. The dot
//!    product and both squared norms of the whole vectors are sums over the `2d` ranks of the
//!    aligned group `r & !(2d - 1) ..` that share them, so each rank computes its partial sums
//!    (in f64, per tensor, ordered as `[dot, |lower group's|², |upper group's|²]`) and the group
//!    sums them by recursive doubling. Each rank then writes `c_own·own + c_other·other` over
//!    its piece. After `log2 p` levels rank `r` holds its `1/p` share of the result.
//! 3. *Gather phase*, levels in reverse: partners swap their shares, doubling what each holds,
//!    until every rank holds the whole result; ranks `p..size` get a copy from `r - p`.
//!
//! So the result is the balanced binary tree over ranks `0..p` in rank order (after the fold),
//! the same recursion [`adasum_reference`] computes sequentially. Every element of the result
//! is computed by exactly one rank and then copied, so all ranks hold identical bits. Each
//! rank sends about `2 (p-1)/p` of the buffer, like the ring, in `2 log2 p` exchanges (plus
//! the small sums), but reads its data twice per level (the sums, then the scaled add).
//!
//! All messages of one call use one tag: every pair exchanges in the same program order and
//! derives every length from the same arguments.

mod kernels;
mod reference;

#[cfg(test)]
mod tests;

use std::ops::Range;
use std::time::Instant;

use hora_transport::{CollectiveError, Op, Tag, Transport};

use super::{Ring, split_disjoint};
use crate::types::DataType;

use kernels::{DotNorms, Kernels, coefficients};
pub use reference::adasum_reference;

/// The largest power of two ≤ `n` (`n ≥ 1`).
fn pow2_floor(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// The kernels for `dtype`, or the error for an integer type.
fn kernels_for(dtype: DataType) -> Result<Kernels, CollectiveError> {
    kernels::for_dtype(dtype).ok_or_else(|| {
        CollectiveError::invalid(format_args!(
            "the Adasum reduction needs a float tensor (f16, bf16, f32 or f64), not {dtype}"
        ))
    })
}

/// Element offsets of consecutive tensors of `counts` elements: `counts.len() + 1` entries.
fn offsets(counts: &[usize]) -> Vec<usize> {
    let mut off = Vec::with_capacity(counts.len() + 1);
    off.push(0);
    let mut at = 0;
    for &c in counts {
        at += c;
        off.push(at);
    }
    off
}

/// Calls `f(tensor, piece)` for each tensor overlapping the element range `r`, with the part
/// of `r` inside it (empty tensors are skipped).
fn pieces(off: &[usize], r: Range<usize>, mut f: impl FnMut(usize, Range<usize>)) {
    if r.is_empty() {
        return;
    }
    // The first tensor that ends after r.start.
    let first = off[1..].partition_point(|&end| end <= r.start);
    for t in first..off.len() - 1 {
        let (s, e) = (off[t].max(r.start), off[t + 1].min(r.end));
        if s >= r.end {
            break;
        }
        if s < e {
            f(t, s..e);
        }
    }
}

/// In-place Adasum of `buf`, which holds consecutive tensors of `counts` elements (each
/// combined on its own). `counts` must sum to the buffer's element count.
pub(super) fn allreduce<T: Transport + ?Sized>(
    ring: &Ring<T>,
    buf: &mut [u8],
    dtype: DataType,
    counts: &[usize],
    tag: Tag,
    deadline: Instant,
) -> Result<(), CollectiveError> {
    let k = kernels_for(dtype)?;
    let es = k.size;
    let n = buf.len() / es;
    if counts.iter().sum::<usize>() != n {
        return Err(CollectiveError::invalid(format_args!(
            "Adasum tensor sizes sum to {} elements but the buffer holds {n}",
            counts.iter().sum::<usize>()
        )));
    }
    let t = &**ring.transport();
    let (me, size) = (t.rank(), t.size());
    if size == 1 || n == 0 {
        return Ok(());
    }
    let p = pow2_floor(size);
    if me >= p {
        // Folded into rank me - p, which does this rank's work and sends the result back.
        t.send(me - p, tag, buf, deadline)?;
        return Ok(t.recv(me - p, tag, buf, deadline)?);
    }
    let folds = me + p < size;
    let off = offsets(counts);
    let mut scratch = ring.scratch(if folds { buf.len() } else { (n - n / 2) * es });
    let io = Io {
        t,
        tag,
        deadline,
        k,
        off: &off,
    };
    if folds {
        let theirs = &mut scratch[..buf.len()];
        t.recv(me + p, tag, theirs, deadline)?;
        let mut sums = vec![0f64; 3 * counts.len()];
        io.partial_sums(buf, theirs, 0..n, true, &mut sums);
        io.combine(buf, theirs, 0..n, true, &sums);
    }
    let mut held = 0..n;
    let mut parents = Vec::new();
    let mut level = 1;
    while level < p {
        let partner = me ^ level;
        let lower = me & level == 0;
        let mid = held.start + held.len() / 2;
        let (keep, give) = if lower {
            (held.start..mid, mid..held.end)
        } else {
            (mid..held.end, held.start..mid)
        };
        let theirs = &mut scratch[..keep.len() * es];
        io.exchange(partner, &buf[bytes(&give, es)], theirs)?;
        let mut sums = vec![0f64; 3 * counts.len()];
        io.partial_sums(buf, theirs, keep.clone(), lower, &mut sums);
        io.group_sum(me, 2 * level, &mut sums)?;
        io.combine(buf, theirs, keep.clone(), lower, &sums);
        parents.push(held);
        held = keep;
        level <<= 1;
    }
    while let Some(parent) = parents.pop() {
        level >>= 1;
        let other = if held.start == parent.start {
            held.end..parent.end
        } else {
            parent.start..held.start
        };
        let (mine, theirs) = split_disjoint(buf, bytes(&held, es), bytes(&other, es));
        io.exchange(me ^ level, mine, theirs)?;
        held = parent;
    }
    if folds {
        t.send(me + p, tag, buf, deadline)?;
    }
    Ok(())
}

/// The byte range of an element range.
fn bytes(r: &Range<usize>, es: usize) -> Range<usize> {
    r.start * es..r.end * es
}

/// What every step of one call shares.
struct Io<'a, T: Transport + ?Sized> {
    t: &'a T,
    tag: Tag,
    deadline: Instant,
    k: Kernels,
    off: &'a [usize],
}

impl<T: Transport + ?Sized> Io<'_, T> {
    /// Sends `send` to `peer` while receiving `recv` from it (either may be empty).
    fn exchange(&self, peer: usize, send: &[u8], recv: &mut [u8]) -> Result<(), CollectiveError> {
        let mut ops = Vec::with_capacity(2);
        if !send.is_empty() {
            ops.push(Op::send(peer, self.tag, send));
        }
        if !recv.is_empty() {
            ops.push(Op::recv(peer, self.tag, recv));
        }
        if !ops.is_empty() {
            self.t.wait(&mut ops, self.deadline)?;
        }
        Ok(())
    }

    /// Adds this rank's `[dot, |lower|², |upper|²]` per tensor over the element range `held`
    /// (its own values in `buf`, the partner's in `theirs`, which starts at `held.start`).
    fn partial_sums(
        &self,
        buf: &[u8],
        theirs: &[u8],
        held: Range<usize>,
        lower: bool,
        sums: &mut [f64],
    ) {
        let es = self.k.size;
        let base = held.start;
        pieces(self.off, held, |t, r| {
            let local = r.start - base..r.end - base;
            let [dot, own, other] =
                (self.k.dot_norms)(&buf[bytes(&r, es)], &theirs[bytes(&local, es)]);
            let (lo, hi) = if lower { (own, other) } else { (other, own) };
            sums[3 * t] += dot;
            sums[3 * t + 1] += lo;
            sums[3 * t + 2] += hi;
        });
    }

    /// Sums `sums` over the aligned group of `group` ranks (a power of two) holding `me`, by
    /// recursive doubling. Both partners of a step add the same two numbers, so every member
    /// ends with the same bits.
    fn group_sum(&self, me: usize, group: usize, sums: &mut [f64]) -> Result<(), CollectiveError> {
        let mut theirs = vec![0f64; sums.len()];
        let mut mask = 1;
        while mask < group {
            self.exchange(
                me ^ mask,
                bytemuck::cast_slice(sums),
                bytemuck::cast_slice_mut(&mut theirs),
            )?;
            sums.iter_mut().zip(&theirs).for_each(|(s, x)| *s += x);
            mask <<= 1;
        }
        Ok(())
    }

    /// Writes `c_own·own + c_other·other` over `held`, with each tensor's coefficients from its
    /// group-wide `sums`.
    fn combine(
        &self,
        buf: &mut [u8],
        theirs: &[u8],
        held: Range<usize>,
        lower: bool,
        sums: &[f64],
    ) {
        let es = self.k.size;
        let base = held.start;
        pieces(self.off, held, |t, r| {
            let s: DotNorms = [sums[3 * t], sums[3 * t + 1], sums[3 * t + 2]];
            let (c_lo, c_hi) = coefficients(s);
            let (c_own, c_other) = if lower { (c_lo, c_hi) } else { (c_hi, c_lo) };
            let local = r.start - base..r.end - base;
            (self.k.scaled_add)(
                &mut buf[bytes(&r, es)],
                c_own,
                &theirs[bytes(&local, es)],
                c_other,
            );
        });
    }
}
