//! Hierarchical allreduce and allgather for jobs that span hosts with several ranks on each:
//! shared memory inside a host, a ring over the network between hosts.
//!
//! How allreduce works (the default, "split" mode). With `H` hosts of `L` ranks each, the
//! buffer is cut into `L` element-aligned blocks:
//! 1. the ranks of each host reduce-scatter the buffer among themselves (shared memory), so
//!    local rank `l` holds block `l` reduced over its host;
//! 2. local rank `l` of every host runs a ring allreduce of block `l` with local rank `l` of
//!    the other hosts (TCP): `L` rings of `H` ranks run at once, each on `1/L` of the data, so
//!    every rank and every rank's connection carries a share;
//! 3. the ranks of each host allgather the blocks (shared memory).
//!
//! Each rank sends `2 (H - 1) / H × 1/L` of the buffer over the network, `L` times less than a
//! rank of the flat ring (`2 (N - 1) / N`), and a host as a whole sends what one rank of an
//! `H`-rank ring would. "Leader" mode instead reduces the whole buffer to local rank 0 (shared
//! memory allreduce), lets one rank per host run the cross-host ring on all of it, and
//! broadcasts the result inside the host; it exists to measure against (docs/transports.md).
//!
//! Allgather(v): local rank `l` of every host first gathers the contributions of local rank `l`
//! of all hosts over the network (the `L` rings again run at once), then the ranks of a host
//! allgather these columns through shared memory, and each rank puts the blocks in job-rank
//! order.
//!
//! Every element is reduced once per host by one rank and once across hosts by one ring, then
//! copied, so all ranks get bit-identical results. `Average` is summed here and divided once by
//! the engine, as with the flat ring; prescale and postscale are the engine's too.
//!
//! What this does not do: broadcast, alltoall, reducescatter and barrier (and allreduce or
//! allgather when turned off) are not run here: [`Collectives::runs`] says no, and the
//! [`Dispatch`](super::Dispatch) wrapper in front runs them on the flat ring. Hosts with
//! different numbers of ranks are refused by [`Layout::from_places`] (the caller falls back
//! to the flat ring and logs why).

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use hora_transport::{Call, CollectiveError, Rank, TransportError};
use parking_lot::Mutex;

use super::segments::{blocks_from_sizes, split_chunks};
use super::{Collectives, check};
// Declared with the settings, so reading the configuration needs no algorithm.
pub use crate::config::HierarchicalMode;
use crate::types::{DataType, ReduceOp};

/// Where one rank says it runs (its launcher's `HOROVOD_LOCAL_*` and `HOROVOD_CROSS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Rank among the processes of its host.
    pub local_rank: u32,
    /// Processes on its host.
    pub local_size: u32,
    /// Index of its host.
    pub cross_rank: u32,
    /// Number of hosts.
    pub cross_size: u32,
}

impl Place {
    /// Bytes of [`Place::to_bytes`].
    pub const BYTES: usize = 16;

    /// Little-endian encoding, for exchanging places between ranks.
    pub fn to_bytes(self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        for (i, v) in [
            self.local_rank,
            self.local_size,
            self.cross_rank,
            self.cross_size,
        ]
        .into_iter()
        .enumerate()
        {
            b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Decodes [`Place::to_bytes`].
    pub fn from_bytes(b: &[u8; Self::BYTES]) -> Self {
        let w = |i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        Self {
            local_rank: w(0),
            local_size: w(1),
            cross_rank: w(2),
            cross_size: w(3),
        }
    }
}

/// Which job rank runs where: `H` hosts with `L` ranks each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `ranks[h][l]`: the job rank of local rank `l` on host `h`.
    ranks: Vec<Vec<Rank>>,
    /// `place[r]`: (host, local rank) of job rank `r`.
    place: Vec<(usize, usize)>,
}

impl Layout {
    /// `hosts` hosts of `local` ranks, numbered host by host (rank = host × local + l), as
    /// horovodrun places them.
    pub fn uniform(hosts: usize, local: usize) -> Self {
        let ranks: Vec<Vec<Rank>> = (0..hosts)
            .map(|h| (0..local).map(|l| h * local + l).collect())
            .collect();
        Self::from_grid(ranks)
    }

    fn from_grid(ranks: Vec<Vec<Rank>>) -> Self {
        let n = ranks.iter().map(Vec::len).sum();
        let mut place = vec![(0, 0); n];
        for (h, row) in ranks.iter().enumerate() {
            for (l, &r) in row.iter().enumerate() {
                place[r] = (h, l);
            }
        }
        Self { ranks, place }
    }

    /// The layout described by every rank's place (`places[r]` is rank `r`'s), or why there is
    /// none: hosts with different numbers of ranks, or places that contradict each other.
    pub fn from_places(places: &[Place]) -> Result<Self, String> {
        let Some(first) = places.first() else {
            return Err("no ranks".into());
        };
        let (l, h) = (first.local_size as usize, first.cross_size as usize);
        if let Some((r, p)) = places
            .iter()
            .enumerate()
            .find(|(_, p)| p.local_size as usize != l)
        {
            return Err(format!(
                "hosts have different numbers of ranks (rank 0's host has {l}, rank {r}'s has {})",
                p.local_size
            ));
        }
        if let Some((r, p)) = places
            .iter()
            .enumerate()
            .find(|(_, p)| p.cross_size as usize != h)
        {
            return Err(format!(
                "ranks disagree on the number of hosts (rank 0: {h}, rank {r}: {})",
                p.cross_size
            ));
        }
        if l == 0 || h == 0 || l.checked_mul(h) != Some(places.len()) {
            return Err(format!(
                "{h} hosts × {l} ranks does not make the job's {} ranks",
                places.len()
            ));
        }
        let mut grid = vec![vec![usize::MAX; l]; h];
        for (r, p) in places.iter().enumerate() {
            let (cr, lr) = (p.cross_rank as usize, p.local_rank as usize);
            if cr >= h || lr >= l {
                return Err(format!(
                    "rank {r} is local rank {lr} of host {cr}, outside {h} hosts × {l} ranks"
                ));
            }
            if grid[cr][lr] != usize::MAX {
                return Err(format!(
                    "ranks {} and {r} both say they are local rank {lr} of host {cr}",
                    grid[cr][lr]
                ));
            }
            grid[cr][lr] = r;
        }
        Ok(Self::from_grid(grid))
    }

    /// Number of hosts.
    pub fn hosts(&self) -> usize {
        self.ranks.len()
    }

    /// Ranks per host.
    pub fn local_size(&self) -> usize {
        self.ranks.first().map_or(0, Vec::len)
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.place.len()
    }

    /// (host, local rank) of job rank `r`.
    pub fn place_of(&self, r: Rank) -> (usize, usize) {
        self.place[r]
    }

    /// The job rank of local rank `l` on host `h`.
    pub fn rank_at(&self, h: usize, l: usize) -> Rank {
        self.ranks[h][l]
    }

    /// The job ranks on host `h`, by local rank.
    pub fn host_ranks(&self, h: usize) -> Vec<Rank> {
        self.ranks[h].clone()
    }

    /// The job ranks with local rank `l`, by host.
    pub fn cross_ranks(&self, l: usize) -> Vec<Rank> {
        self.ranks.iter().map(|row| row[l]).collect()
    }
}

/// Default piece size of a pipelined split allreduce: large enough that the hand-over between
/// the shared-memory steps and the network step costs nothing next to moving a piece, small
/// enough that a 16 MiB gradient already overlaps them.
pub const DEFAULT_PIPELINE_BYTES: usize = 8 << 20;

/// Allreduce and allgather through a host's collectives and a cross-host ring (the other
/// collectives run on the flat ring of the [`Dispatch`](super::Dispatch) in front). See the
/// module docs.
#[derive(Debug)]
pub struct Hierarchical {
    layout: Layout,
    rank: Rank,
    host: usize,
    local_rank: usize,
    /// The ranks of this host, numbered by local rank.
    local: Box<dyn Collectives>,
    /// `local` names peers by local rank (shared memory) and its errors are renumbered.
    local_names_local_ranks: bool,
    /// The ranks with this local rank, numbered by host.
    cross: Box<dyn Collectives>,
    allreduce: bool,
    allgather: bool,
    mode: HierarchicalMode,
    /// Split allreduces of at least twice this many bytes are pipelined in pieces of it
    /// (0: never).
    pipeline_bytes: usize,
    /// (block or column, packed gather) buffers, reused across calls.
    scratch: Mutex<(Vec<u8>, Vec<u8>)>,
    allreduce_calls: AtomicU64,
    allgather_calls: AtomicU64,
    /// The first allreduce and the first allgather were logged.
    logged: [AtomicBool; 2],
}

impl Hierarchical {
    /// Combines a host's collectives (`local`: this host's ranks numbered by local rank) and
    /// the cross-host ones (`cross`: this local rank on every host, numbered by host) for job
    /// rank `rank` of `layout`. Allreduce and allgather are hierarchical.
    pub fn new(
        layout: Layout,
        rank: Rank,
        local: Box<dyn Collectives>,
        cross: Box<dyn Collectives>,
    ) -> Self {
        let (host, local_rank) = layout.place_of(rank);
        Self {
            layout,
            rank,
            host,
            local_rank,
            local,
            local_names_local_ranks: false,
            cross,
            allreduce: true,
            allgather: true,
            mode: HierarchicalMode::Split,
            pipeline_bytes: DEFAULT_PIPELINE_BYTES,
            scratch: Mutex::new((Vec::new(), Vec::new())),
            allreduce_calls: AtomicU64::new(0),
            allgather_calls: AtomicU64::new(0),
            logged: [AtomicBool::new(false), AtomicBool::new(false)],
        }
    }

    /// Chooses which of allreduce and allgather are hierarchical (the other runs flat, on the
    /// dispatch wrapper's ring).
    pub fn with_ops(mut self, allreduce: bool, allgather: bool) -> Self {
        self.allreduce = allreduce;
        self.allgather = allgather;
        self
    }

    /// Chooses how allreduce splits the work.
    pub fn with_mode(mut self, mode: HierarchicalMode) -> Self {
        self.mode = mode;
        self
    }

    /// Pipelines split allreduces of at least twice `n` bytes in pieces of about `n` bytes
    /// (0 never pipelines). Every rank must use the same value.
    pub fn with_pipeline_bytes(mut self, n: usize) -> Self {
        self.pipeline_bytes = n;
        self
    }

    /// Says that `local` reports peers by local rank (shared memory), so its errors are
    /// renumbered to job ranks.
    pub fn local_errors_name_local_ranks(mut self) -> Self {
        self.local_names_local_ranks = true;
        self
    }

    /// The layout this runs on.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// How many allreduces and allgathers ran hierarchically so far.
    pub fn hierarchical_calls(&self) -> (u64, u64) {
        (
            self.allreduce_calls.load(Ordering::Relaxed),
            self.allgather_calls.load(Ordering::Relaxed),
        )
    }

    /// A `local` error with its peer renumbered from local rank to job rank.
    fn local_err(&self, e: CollectiveError) -> CollectiveError {
        let e = match e {
            CollectiveError::Transport(e) if self.local_names_local_ranks => e,
            other => return other,
        };
        let job = |l: Rank| {
            if l < self.layout.local_size() {
                self.layout.rank_at(self.host, l)
            } else {
                l
            }
        };
        match e {
            TransportError::ConnectionLost { peer, detail } => TransportError::ConnectionLost {
                peer: job(peer),
                detail: format!("{detail} (shared memory on this host)"),
            },
            TransportError::Timeout { peer, after, what } => TransportError::Timeout {
                peer: peer.map(job),
                after,
                what,
            },
            TransportError::Protocol { peer, detail } => TransportError::Protocol {
                peer: job(peer),
                detail,
            },
            TransportError::Io { peer, source } => TransportError::Io {
                peer: peer.map(job),
                source,
            },
            other => other,
        }
        .into()
    }

    /// Makes host peers waiting on this rank fail at once when a step failed here (a failed
    /// cross-host ring leaves them waiting in shared memory otherwise).
    fn fail(&self, e: CollectiveError) -> CollectiveError {
        self.local.abort(&e.to_string());
        e
    }

    fn note_first(&self, what: &str, bytes: usize) {
        let which = usize::from(what == "allgather");
        if !self.logged[which].swap(true, Ordering::Relaxed) {
            tracing::info!(
                rank = self.rank,
                hosts = self.layout.hosts(),
                local_size = self.layout.local_size(),
                mode = ?self.mode,
                "hierarchical {what} in use (first call: {bytes} bytes)"
            );
        }
    }

    fn allreduce_split(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        let piece = self.pipeline_bytes / dtype.size() * dtype.size();
        if piece > 0 && buf.len() >= 2 * piece {
            return self.allreduce_pipelined(buf, piece, dtype, op, seq, deadline);
        }
        let chunks = split_chunks(buf.len(), dtype.size(), self.layout.local_size());
        let sizes: Vec<usize> = chunks.iter().map(Range::len).collect();
        let mine = sizes[self.local_rank];
        let mut scratch = self.scratch.lock();
        let block = grown(&mut scratch.0, mine);
        self.local
            .reducescatter(buf, block, &sizes, dtype, op, seq, deadline)
            .map_err(|e| self.local_err(e))?;
        self.cross.allreduce(block, dtype, op, seq, deadline)?;
        self.local
            .allgatherv(block, buf, &sizes, seq, deadline)
            .map_err(|e| self.local_err(e))
    }

    /// The split allreduce in pieces, the network step of one piece running on a helper
    /// thread while this thread runs the shared-memory steps of its neighbours: reduce-scatter
    /// piece `i + 1` and allgather piece `i - 1` while piece `i` crosses hosts.
    ///
    /// Every rank runs the shared-memory steps in the same order (RS 0, RS 1, AG 0, RS 2,
    /// AG 1, ...) and the cross-host allreduces in piece order, one tag for all (messages
    /// between a pair with one tag arrive in order). A failure on either thread aborts both
    /// the host group and the transport, so the other thread cannot wait on a peer that is
    /// itself stuck: the engine stops the job on a failed collective anyway.
    fn allreduce_pipelined(
        &self,
        buf: &mut [u8],
        piece: usize,
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        use std::sync::mpsc::sync_channel;
        let local = self.layout.local_size();
        let mut pieces: Vec<&mut [u8]> = buf.chunks_mut(piece).collect();
        let n = pieces.len();
        let sizes: Vec<Vec<usize>> = pieces
            .iter()
            .map(|p| {
                split_chunks(p.len(), dtype.size(), local)
                    .iter()
                    .map(Range::len)
                    .collect()
            })
            .collect();
        let fail_all = |e: CollectiveError| {
            self.local.abort(&e.to_string());
            self.cross.abort(&e.to_string());
            e
        };
        std::thread::scope(|s| {
            let (to_net, net_in) = sync_channel::<Vec<u8>>(1);
            let (net_out, from_net) = sync_channel::<Result<Vec<u8>, CollectiveError>>(2);
            let cross = &*self.cross;
            s.spawn(move || {
                for mut block in net_in {
                    let r = cross.allreduce(&mut block, dtype, op, seq, deadline);
                    let failed = r.is_err();
                    if net_out.send(r.map(|()| block)).is_err() || failed {
                        break;
                    }
                }
            });
            let mut spare: Vec<Vec<u8>> = Vec::new();
            let gather = |i: usize, pieces: &mut [&mut [u8]]| -> Result<Vec<u8>, CollectiveError> {
                let block = from_net.recv().map_err(|_| {
                    CollectiveError::invalid("the network step of a pipelined allreduce stopped")
                })??;
                self.local
                    .allgatherv(&block, pieces[i], &sizes[i], seq, deadline)
                    .map_err(|e| self.local_err(e))?;
                Ok(block)
            };
            let result = (|| {
                for i in 0..n {
                    let mut block = spare.pop().unwrap_or_default();
                    block.resize(sizes[i][self.local_rank], 0);
                    self.local
                        .reducescatter(pieces[i], &mut block, &sizes[i], dtype, op, seq, deadline)
                        .map_err(|e| self.local_err(e))?;
                    if to_net.send(block).is_err() {
                        // The network step stopped: its error says why.
                        return Err(from_net.iter().find_map(Result::err).unwrap_or_else(|| {
                            CollectiveError::invalid(
                                "the network step of a pipelined allreduce stopped",
                            )
                        }));
                    }
                    if i > 0 {
                        spare.push(gather(i - 1, &mut pieces)?);
                    }
                }
                gather(n - 1, &mut pieces).map(drop)
            })();
            drop(to_net);
            result.map_err(fail_all)
        })
    }

    fn allreduce_leader(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        self.local
            .allreduce(buf, dtype, op, seq, deadline)
            .map_err(|e| self.local_err(e))?;
        if self.local_rank == 0 {
            self.cross.allreduce(buf, dtype, op, seq, deadline)?;
        }
        self.local
            .broadcast(buf, 0, seq, deadline)
            .map_err(|e| self.local_err(e))
    }

    fn allgatherv_split(
        &self,
        input: &[u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        let (hosts, local) = (self.layout.hosts(), self.layout.local_size());
        let col = |l: usize| -> Vec<usize> {
            (0..hosts)
                .map(|h| bytes_per_rank[self.layout.rank_at(h, l)])
                .collect()
        };
        let my_col = col(self.local_rank);
        let packed_sizes: Vec<usize> = (0..local).map(|l| col(l).iter().sum()).collect();
        let total = output.len();
        let mut guard = self.scratch.lock();
        let (column, packed) = &mut *guard;
        let column = grown(column, packed_sizes[self.local_rank]);
        self.cross
            .allgatherv(input, column, &my_col, seq, deadline)?;
        let packed = grown(packed, total);
        self.local
            .allgatherv(column, packed, &packed_sizes, seq, deadline)
            .map_err(|e| self.local_err(e))?;
        // `packed` holds, for each local rank l, the blocks of (host 0, l), (host 1, l), ...
        let out_blocks = blocks_from_sizes(bytes_per_rank);
        let mut off = 0;
        for l in 0..local {
            for h in 0..hosts {
                let r = self.layout.rank_at(h, l);
                let n = bytes_per_rank[r];
                output[out_blocks[r].clone()].copy_from_slice(&packed[off..off + n]);
                off += n;
            }
        }
        Ok(())
    }
}

/// The first `len` bytes of `v`, grown (never shrunk) to hold them.
fn grown(v: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if v.len() < len {
        v.resize(len, 0);
    }
    &mut v[..len]
}

/// What a direct call of a collective this type does not run says.
fn not_here(what: &str) -> CollectiveError {
    CollectiveError::invalid(format_args!(
        "hierarchical collectives do not run {what}: put them behind collectives::Dispatch, \
         which runs it on the flat ring"
    ))
}

impl Collectives for Hierarchical {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.layout.size()
    }

    fn runs(&self, call: &Call) -> bool {
        match call {
            // Adasum is not a sum of the host's vectors: the local reduce would change its
            // result, so it runs flat on hora's Adasum algorithm instead.
            Call::Allreduce { op, .. } => self.allreduce && op.is_elementwise(),
            Call::Allgatherv { .. } => self.allgather,
            _ => false,
        }
    }

    fn allreduce(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        if !self.allreduce {
            return Err(not_here("allreduce (turned off)"));
        }
        if !op.is_elementwise() {
            return Err(not_here("Adasum"));
        }
        check::allreduce(buf.len(), dtype, op)?;
        if buf.is_empty() {
            return Ok(());
        }
        self.note_first("allreduce", buf.len());
        self.allreduce_calls.fetch_add(1, Ordering::Relaxed);
        match self.mode {
            HierarchicalMode::Split => self.allreduce_split(buf, dtype, op, seq, deadline),
            HierarchicalMode::Leader => self.allreduce_leader(buf, dtype, op, seq, deadline),
        }
        .map_err(|e| self.fail(e))
    }

    fn allgatherv(
        &self,
        input: &[u8],
        output: &mut [u8],
        bytes_per_rank: &[usize],
        seq: u64,
        deadline: Instant,
    ) -> Result<(), CollectiveError> {
        if !self.allgather {
            return Err(not_here("allgather (turned off)"));
        }
        let total = check::allgatherv(self.rank, self.size(), input, output, bytes_per_rank)?;
        self.note_first("allgather", total);
        self.allgather_calls.fetch_add(1, Ordering::Relaxed);
        self.allgatherv_split(input, output, bytes_per_rank, seq, deadline)
            .map_err(|e| self.fail(e))
    }

    fn broadcast(
        &self,
        _buf: &mut [u8],
        _root: usize,
        _seq: u64,
        _deadline: Instant,
    ) -> Result<(), CollectiveError> {
        Err(not_here("broadcast"))
    }

    fn alltoallv(
        &self,
        _input: &[u8],
        _send_bytes: &[usize],
        _output: &mut [u8],
        _recv_bytes: &[usize],
        _seq: u64,
        _deadline: Instant,
    ) -> Result<(), CollectiveError> {
        Err(not_here("alltoall"))
    }

    fn reducescatter(
        &self,
        _input: &mut [u8],
        _output: &mut [u8],
        _bytes_per_rank: &[usize],
        _dtype: DataType,
        _op: ReduceOp,
        _seq: u64,
        _deadline: Instant,
    ) -> Result<(), CollectiveError> {
        Err(not_here("reducescatter"))
    }

    fn barrier(&self, _seq: u64, _deadline: Instant) -> Result<(), CollectiveError> {
        Err(not_here("barrier"))
    }

    fn abort(&self, reason: &str) {
        self.local.abort(reason);
        self.cross.abort(reason);
    }
}

#[cfg(test)]
mod tests;
