//! Broadcast, allgather(v) and barrier through the shared segments.
//!
//! How it works. These use the same pipeline steps and counters as allreduce (see
//! `allreduce.rs`), so any sequence of collectives keeps the step numbers of all ranks equal.
//! In one step a rank that has data copies up to one slot row (`size × slice_bytes` bytes) of
//! it into its row `d` and publishes `posted`; every rank copies what it needs from the
//! posting ranks' rows and publishes `copied`. A row is rewritten only once every peer has
//! published `copied` for the step that last used it. Each byte crosses from one process to
//! another with one copy in and one copy out, both cache-sized.

use std::time::Instant;

use hora_transport::{Rank, TransportError};

use crate::allreduce::block_starts;
use crate::group::{Counter, ShmGroup};

impl ShmGroup {
    fn row_bytes(&self) -> usize {
        self.size() * self.slice_bytes()
    }

    /// Runs `steps` pipeline steps; in each, `post(step_index, row)` fills our row (returns
    /// whether we posted anything) and `take(step_index, peer, row)` reads a peer's row.
    fn exchange_steps(
        &self,
        steps: usize,
        deadline: Instant,
        post: &mut dyn FnMut(usize, *mut u8) -> bool,
        take: &mut dyn FnMut(usize, Rank, *const u8) -> bool,
        wants_from: &dyn Fn(usize, Rank) -> bool,
    ) -> Result<(), TransportError> {
        self.check_not_aborted()?;
        let me = self.rank();
        let depth = self.depth() as u64;
        let mut step = self.step.lock();
        let result = (|| {
            for j in 0..steps {
                let k = *step;
                let d = (k % depth) as usize;
                if k >= depth {
                    for p in (0..self.size()).filter(|&p| p != me) {
                        self.wait_for(p, Counter::Copied, k + 1 - depth, deadline)?;
                    }
                }
                post(j, self.slot(me, d, 0));
                self.publish(Counter::Posted, k + 1);
                for p in (0..self.size()).filter(|&p| p != me) {
                    if wants_from(j, p) {
                        self.wait_for(p, Counter::Posted, k + 1, deadline)?;
                        take(j, p, self.slot(p, d, 0));
                    }
                }
                self.publish(Counter::Reduced, k + 1);
                self.publish(Counter::Copied, k + 1);
                *step = k + 1;
            }
            Ok(())
        })();
        if let Err(e) = &result {
            let culprit = match e {
                TransportError::ConnectionLost { peer, .. } => *peer,
                TransportError::Timeout { peer: Some(p), .. } => *p,
                _ => me,
            };
            self.abort_because(&format!("a shared-memory collective failed: {e}"), culprit);
        }
        result
    }

    /// Copies `root`'s `buf` into every rank's `buf` (same length on every rank).
    pub fn broadcast(
        &self,
        buf: &mut [u8],
        root: Rank,
        deadline: Instant,
    ) -> Result<(), TransportError> {
        let me = self.rank();
        if root >= self.size() {
            return Err(TransportError::InvalidPeer {
                peer: root,
                size: self.size(),
                me,
            });
        }
        if self.size() == 1 || buf.is_empty() {
            return Ok(());
        }
        let row = self.row_bytes();
        let steps = buf.len().div_ceil(row);
        let len = buf.len();
        let at = |j: usize| (j * row, row.min(len - j * row));
        // One pointer for both directions: the root only reads `buf`, the others only write it.
        let dst: *mut u8 = buf.as_mut_ptr();
        self.exchange_steps(
            steps,
            deadline,
            &mut |j, slot| {
                if me != root {
                    return false;
                }
                let (o, l) = at(j);
                // SAFETY: [o, o+l) is inside `buf`; our row holds `row` ≥ l bytes and no peer
                // reads it until we publish `posted` (exchange_steps waited for the reuse).
                unsafe { std::ptr::copy_nonoverlapping(dst.add(o).cast_const(), slot, l) };
                true
            },
            &mut |j, _p, slot| {
                let (o, l) = at(j);
                // SAFETY: the root wrote l bytes of its row before publishing `posted` for this
                // step (we waited for it) and keeps them until we publish `copied`; [o, o+l) is
                // inside `buf`, which nothing else touches during the call.
                unsafe { std::ptr::copy_nonoverlapping(slot, dst.add(o), l) };
                true
            },
            &|_, p| p == root,
        )
    }

    /// Gathers every rank's `input` (rank r has `bytes_per_rank[r]` bytes) into `output` in
    /// rank order; `output` is the sum of the lengths.
    pub fn allgatherv(
        &self,
        input: &[u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        deadline: Instant,
    ) -> Result<(), TransportError> {
        let (me, n) = (self.rank(), self.size());
        let total: usize = bytes_per_rank.iter().sum();
        if bytes_per_rank.len() != n || input.len() != bytes_per_rank[me] || output.len() != total {
            return Err(TransportError::Protocol {
                peer: me,
                detail: format!(
                    "invalid allgather arguments: input {} bytes, output {}, per rank {bytes_per_rank:?}",
                    input.len(),
                    output.len()
                ),
            });
        }
        let offsets = block_starts(bytes_per_rank);
        output[offsets[me]..offsets[me] + input.len()].copy_from_slice(input);
        if n == 1 || total == 0 {
            return Ok(());
        }
        let row = self.row_bytes();
        let steps = bytes_per_rank
            .iter()
            .map(|b| b.div_ceil(row))
            .max()
            .unwrap_or(0);
        let piece = |j: usize, r: Rank| {
            let b = bytes_per_rank[r];
            let o = (j * row).min(b);
            (o, row.min(b - o))
        };
        let out: *mut u8 = output.as_mut_ptr();
        self.exchange_steps(
            steps,
            deadline,
            &mut |j, slot| {
                let (o, l) = piece(j, me);
                // SAFETY: [o, o+l) is inside `input`; our row is free (reuse waited) and holds
                // `row` ≥ l bytes.
                unsafe { std::ptr::copy_nonoverlapping(input.as_ptr().add(o), slot, l) };
                l > 0
            },
            &mut |j, p, slot| {
                let (o, l) = piece(j, p);
                // SAFETY: rank p posted l bytes of its row for this step (we waited for it) and
                // keeps them until we publish `copied`; the target lies inside `output` at p's
                // offset, which only this call writes.
                unsafe { std::ptr::copy_nonoverlapping(slot, out.add(offsets[p] + o), l) };
                true
            },
            &|j, p| piece(j, p).1 > 0,
        )
    }

    /// Returns once every rank of the group has entered.
    pub fn barrier(&self, deadline: Instant) -> Result<(), TransportError> {
        if self.size() == 1 {
            return Ok(());
        }
        self.exchange_steps(
            1,
            deadline,
            &mut |_, _| true,
            &mut |_, _, _| true,
            &|_, _| true,
        )
    }
}
