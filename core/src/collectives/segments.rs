//! Where each byte goes: chunk and segment arithmetic for the ring algorithms (pure, no IO).
//!
//! A buffer of `len` bytes is cut into one *chunk* per rank on element boundaries, so that a
//! chunk can be reduced on its own; when the element count does not divide evenly, the first
//! `elements % ranks` chunks get one extra element (chunk sizes differ by at most one
//! element). Each chunk is then cut into *segments* of at most `max_segment_bytes`, the unit
//! of pipelining: while one segment is being reduced, the next is on the wire.
//!
//! Every rank computes the same cuts from the same inputs, so sender and receiver agree on
//! each message's length without telling each other.

use std::ops::Range;

/// Splits `len` bytes of `elem`-byte elements into `parts` consecutive chunks on element
/// boundaries; the first `(len / elem) % parts` chunks get one extra element. Bytes after the
/// last whole element (if `len` is not a multiple of `elem`) go to the last chunk, so the
/// chunks always cover `0..len` exactly. Returns no chunks when `parts == 0`.
pub fn split_chunks(len: usize, elem: usize, parts: usize) -> Vec<Range<usize>> {
    if parts == 0 {
        return Vec::new();
    }
    let elem = elem.max(1);
    let elems = len / elem;
    let (base, extra) = (elems / parts, elems % parts);
    let mut start = 0;
    let mut out: Vec<Range<usize>> = (0..parts)
        .map(|i| {
            let n = (base + usize::from(i < extra)) * elem;
            let r = start..start + n;
            start += n;
            r
        })
        .collect();
    if let Some(last) = out.last_mut() {
        last.end = len;
    }
    out
}

/// Consecutive byte ranges from a list of sizes (block `i` is `sizes[i]` bytes long).
pub fn blocks_from_sizes(sizes: &[usize]) -> Vec<Range<usize>> {
    let mut start = 0;
    sizes
        .iter()
        .map(|&n| {
            let r = start..start + n;
            start += n;
            r
        })
        .collect()
}

/// The segment size actually used: `max_segment_bytes` rounded down to whole elements, but
/// never less than one element.
pub fn segment_bytes(elem: usize, max_segment_bytes: usize) -> usize {
    let elem = elem.max(1);
    (max_segment_bytes / elem).max(1) * elem
}

/// Cuts `chunk` into segments of [`segment_bytes`]`(elem, max_segment_bytes)` bytes (the last
/// may be shorter). An empty chunk has no segments, so nothing is sent for it.
pub fn split_segments(
    chunk: Range<usize>,
    elem: usize,
    max_segment_bytes: usize,
) -> impl ExactSizeIterator<Item = Range<usize>> + Clone {
    let seg = segment_bytes(elem, max_segment_bytes);
    let len = chunk.end.saturating_sub(chunk.start);
    let count = len.div_ceil(seg);
    (0..count).map(move |i| {
        let start = chunk.start + i * seg;
        start..(start + seg).min(chunk.end)
    })
}

#[cfg(test)]
mod tests;
