//! Allreduce through the shared segments: every rank reduces its share straight from its
//! peers' memory, in a pipeline of cache-sized steps.
//!
//! How it works. The buffer is walked in blocks of `size × slice_bytes` bytes; one block is
//! one pipeline step `k`, using slot row `d = k % depth` of every segment. A block is cut into
//! `size` element-aligned parts; rank `c` owns part `c`. In step `k` rank `r`:
//! 1. waits until every peer has finished step `k - depth` (it read our row `d` then), so the
//!    row can be overwritten;
//! 2. copies its input of every part `c ≠ r` into its slot `(d, c)` and publishes `posted = k+1`;
//! 3. waits for every peer's `posted`, then reduces its own part in place in its buffer,
//!    reading each peer's slot `(d, r)` directly from the peer's mapping (no intermediate
//!    copy), copies the result into its own slot `(d, r)` and publishes `reduced = k+1`;
//! 4. waits for each peer's `reduced` and copies the peer's result (its slot `(d, p)`) into
//!    part `p` of its buffer; publishes `copied = k+1`.
//!
//! Each element is reduced by exactly one rank and copied to the others, so every rank ends
//! with bit-identical results. Each rank reads and writes its buffer about once, and the
//! slices it exchanges stay in the caches, so the cost is close to the memory bandwidth of
//! touching the buffer itself. Step numbers continue across calls, so consecutive calls need
//! no barrier between them.

use std::time::Instant;

use hora_transport::reduce::reduce_into;
use hora_transport::{CollectiveError, DataType, ReduceOp, TransportError};

use crate::group::{Counter, ShmGroup};

/// Where each block starts when blocks of these sizes are laid end to end.
pub(crate) fn block_starts(sizes: &[usize]) -> Vec<usize> {
    sizes
        .iter()
        .scan(0, |acc, &b| {
            let start = *acc;
            *acc += b;
            Some(start)
        })
        .collect()
}

/// Byte ranges of the `n` element-aligned parts of a block of `len` bytes (earlier parts get
/// the extra elements).
pub(crate) fn parts(len: usize, elem: usize, n: usize) -> impl Iterator<Item = (usize, usize)> {
    let elems = len / elem;
    let (base, extra) = (elems / n, elems % n);
    (0..n).map(move |c| {
        let start = (c * base + c.min(extra)) * elem;
        let count = base + usize::from(c < extra);
        (start, count * elem)
    })
}

impl ShmGroup {
    /// In-place allreduce of `buf`, whole `dtype` elements combined with `op` (`Average` is
    /// summed; the caller scales). Every rank must call it with the same length, dtype and
    /// op; it returns once this rank's buffer holds the result.
    pub fn allreduce(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        self.check_not_aborted()?;
        let (me, n, elem) = (self.rank(), self.size(), dtype.size());
        if !buf.len().is_multiple_of(elem) || elem > self.slice_bytes() {
            return Err(CollectiveError::invalid(format_args!(
                "shared-memory allreduce of {} bytes of {dtype} elements",
                buf.len()
            )));
        }
        if n == 1 || buf.is_empty() {
            return Ok(());
        }
        let mut step = self.step.lock();
        let result = self.allreduce_steps(buf, dtype, op, deadline, &mut step);
        if let Err(e) = &result {
            // Our step counters no longer match the peers': nothing later can succeed.
            let culprit = match e.as_transport() {
                Some(TransportError::ConnectionLost { peer, .. }) => *peer,
                Some(TransportError::Timeout { peer: Some(p), .. }) => *p,
                _ => me,
            };
            self.abort_because(&format!("a shared-memory allreduce failed: {e}"), culprit);
        }
        result
    }

    fn allreduce_steps(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        deadline: Instant,
        step: &mut u64,
    ) -> Result<(), CollectiveError> {
        let (me, n, depth) = (self.rank(), self.size(), self.depth() as u64);
        let elem = dtype.size();
        // Whole elements per slice, so each part of a full block fits its slot.
        let slice = self.slice_bytes() / elem * elem;
        let block = n * slice;
        let peers = || (0..n).filter(move |&p| p != me);
        let mut off = 0;
        while off < buf.len() {
            let k = *step;
            let d = (k % depth) as usize;
            let len = block.min(buf.len() - off);
            let blk = &mut buf[off..off + len];
            let part: Vec<(usize, usize)> = parts(len, elem, n).collect();

            // 1. Our row d is free once every peer finished step k - depth.
            if k >= depth {
                for p in peers() {
                    self.wait_for(p, Counter::Copied, k + 1 - depth, deadline)?;
                }
            }
            // 2. Post our inputs for the other ranks' parts.
            for c in peers() {
                let (s, l) = part[c];
                // SAFETY: slot (d, c) of our own segment is `slice` ≥ l bytes; by step 1 no
                // peer reads it now, and it cannot overlap `blk` (process memory).
                unsafe {
                    std::ptr::copy_nonoverlapping(blk[s..].as_ptr(), self.slot(me, d, c), l);
                }
            }
            self.publish(Counter::Posted, k + 1);

            // 3. Reduce our part from every peer's slot, in place in our buffer.
            let (s, l) = part[me];
            for p in peers() {
                self.wait_for(p, Counter::Posted, k + 1, deadline)?;
                // SAFETY: peer p wrote slot (d, me) of its segment before publishing
                // posted ≥ k+1 (Release, observed with Acquire in wait_for) and will not
                // write it again before we publish copied ≥ k+1; it is `l` ≤ slice bytes.
                let src = unsafe { std::slice::from_raw_parts(self.slot(p, d, me), l) };
                reduce_into(&mut blk[s..s + l], src, dtype, op)
                    .map_err(CollectiveError::invalid)?;
            }
            // SAFETY: our slot (d, me) is free (step 1) and `l` ≤ slice bytes long.
            unsafe {
                std::ptr::copy_nonoverlapping(blk[s..].as_ptr(), self.slot(me, d, me), l);
            }
            self.publish(Counter::Reduced, k + 1);

            // 4. Gather the other parts from their reducers.
            for p in peers() {
                let (s, l) = part[p];
                self.wait_for(p, Counter::Reduced, k + 1, deadline)?;
                // SAFETY: peer p wrote its slot (d, p) before publishing reduced ≥ k+1 and
                // keeps it until we publish copied ≥ k+1; `l` ≤ slice bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(self.slot(p, d, p), blk[s..].as_mut_ptr(), l);
                }
            }
            self.publish(Counter::Copied, k + 1);
            *step = k + 1;
            off += len;
        }
        Ok(())
    }
}

impl ShmGroup {
    /// Reduces `input` (same length on every rank) and leaves this rank's block in `output`:
    /// block r is `bytes_per_rank[r]` bytes, blocks are consecutive in rank order. In each
    /// step every rank posts its piece of every other rank's block, then reduces its own
    /// piece straight from the peers' segments into `output`.
    #[allow(clippy::too_many_arguments)]
    pub fn reducescatter(
        &self,
        input: &[u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        dtype: DataType,
        op: ReduceOp,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        self.check_not_aborted()?;
        let (me, n, elem) = (self.rank(), self.size(), dtype.size());
        let total: usize = bytes_per_rank.iter().sum();
        if elem > self.slice_bytes()
            || bytes_per_rank.len() != n
            || total != input.len()
            || output.len() != bytes_per_rank[me]
            || bytes_per_rank.iter().any(|b| !b.is_multiple_of(elem))
        {
            return Err(CollectiveError::invalid(format_args!(
                "shared-memory reducescatter: input {} bytes, output {}, blocks \
                 {bytes_per_rank:?}, {dtype} elements",
                input.len(),
                output.len()
            )));
        }
        let starts = block_starts(bytes_per_rank);
        let mine = &input[starts[me]..starts[me] + bytes_per_rank[me]];
        output.copy_from_slice(mine);
        if n == 1 || total == 0 {
            return Ok(());
        }
        let slice = self.slice_bytes() / elem * elem;
        let steps = bytes_per_rank
            .iter()
            .map(|b| b.div_ceil(slice))
            .max()
            .unwrap_or(0);
        let piece = |j: usize, c: usize| {
            let o = (j * slice).min(bytes_per_rank[c]);
            (o, slice.min(bytes_per_rank[c] - o))
        };
        let depth = self.depth() as u64;
        let mut step = self.step.lock();
        let result = (|| -> Result<(), CollectiveError> {
            for j in 0..steps {
                let k = *step;
                let d = (k % depth) as usize;
                if k >= depth {
                    for p in (0..n).filter(|&p| p != me) {
                        self.wait_for(p, Counter::Copied, k + 1 - depth, deadline)?;
                    }
                }
                for c in (0..n).filter(|&c| c != me) {
                    let (o, l) = piece(j, c);
                    // SAFETY: our slot (d, c) is free (waited above) and `slice` ≥ l bytes;
                    // the source lies inside `input`.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            input[starts[c] + o..].as_ptr(),
                            self.slot(me, d, c),
                            l,
                        );
                    }
                }
                self.publish(Counter::Posted, k + 1);
                let (o, l) = piece(j, me);
                for p in (0..n).filter(|&p| p != me) {
                    if l == 0 {
                        break;
                    }
                    self.wait_for(p, Counter::Posted, k + 1, deadline)?;
                    // SAFETY: peer p wrote its slot (d, me) before publishing posted ≥ k+1 and
                    // keeps it until we publish copied ≥ k+1; it holds ≥ l bytes.
                    let src = unsafe { std::slice::from_raw_parts(self.slot(p, d, me), l) };
                    reduce_into(&mut output[o..o + l], src, dtype, op)
                        .map_err(CollectiveError::invalid)?;
                }
                self.publish(Counter::Reduced, k + 1);
                self.publish(Counter::Copied, k + 1);
                *step = k + 1;
            }
            Ok(())
        })();
        if let Err(e) = &result {
            let culprit = match e.as_transport() {
                Some(TransportError::ConnectionLost { peer, .. }) => *peer,
                Some(TransportError::Timeout { peer: Some(p), .. }) => *p,
                _ => me,
            };
            self.abort_because(
                &format!("a shared-memory reducescatter failed: {e}"),
                culprit,
            );
        }
        result
    }
}
