//! The executor: runs one resolved collective over this rank's tensors.
//!
//! # Design overview
//!
//! An [`Executor`] owns what moving tensor bytes needs and nothing else: the [`Collectives`] it
//! runs on, its [`FusionBuffer`], the sequence number that tags its collectives (the same on
//! every member, because every member runs the same responses in the same order) and a
//! [`Timeline`]. [`Executor::run`] takes one [`Response`] and the entries this rank holds for
//! it, and returns [`Completions`]: what each entry's handle completes with, and whether the
//! engine must stop. How it works, per response: copy into the fusion buffer (or work in the
//! caller's buffer when there is a single tensor), prescale, the collective, postscale (with
//! 1/size for Average), copy out.
//!
//! What it does not do: negotiate, talk to the coordinator or send control messages, own the
//! queue, complete handles, or decide what a failure means for the job. The background shell
//! (`background.rs`) does all of that with what `run` returns.
//!
//! Reuse: its rank and size are those of its collectives, and it holds no process-wide or
//! rank-0-only state (the shell decides whether its timeline records anything). So a second
//! process set is a second `Executor::new` over that set's collectives, with its own fusion
//! buffer and sequence; a device executor is another instance over device collectives (NCCL),
//! not a branch inside this one.

use std::time::Duration;

use hora_transport::{CollectiveError, deadline_after};

use super::fusion_buffer::FusionBuffer;
use super::queue::Entry;
use crate::collectives::Collectives;
use crate::coordinator::{Response, TensorInfo};
use crate::error::Error;
use crate::handle::{Completion, OutputBuffer};
use crate::reduce;
use crate::timeline::Timeline;
use crate::types::{CollectiveKind, DataType, ReduceOp};

#[cfg(test)]
mod tests;

/// The one place a collective's failure becomes a [`hora::Error`](Error): `op` names what ran
/// and `tensors` the names it carried. A caller's mistake is an invalid argument; a transport
/// failure keeps the `TransportError` as its source.
pub(crate) fn collective_error(
    rank: usize,
    op: &str,
    tensors: &str,
    cause: CollectiveError,
) -> Error {
    Error::collective(rank, op, tensors, cause)
}

/// Runs responses on one set of collectives.
pub(crate) struct Executor {
    collectives: Box<dyn Collectives>,
    fusion: FusionBuffer,
    /// Numbers this executor's collectives identically on every member (their tags).
    seq: u64,
    timeline: Timeline,
    /// How long one collective may take before it fails.
    op_timeout: Duration,
    rank: usize,
    size: usize,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("collectives", &self.collectives)
            .field("seq", &self.seq)
            .field("fusion_bytes", &self.fusion.capacity())
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor over `collectives` whose collectives each fail after `op_timeout`.
    pub(crate) fn new(collectives: Box<dyn Collectives>, op_timeout: Duration) -> Self {
        Self {
            rank: collectives.rank(),
            size: collectives.size(),
            collectives,
            fusion: FusionBuffer::new(),
            seq: 0,
            timeline: Timeline::disabled(),
            op_timeout,
        }
    }

    /// The timeline this executor records its collectives in (the shell records negotiation).
    pub(crate) fn timeline_mut(&mut self) -> &mut Timeline {
        &mut self.timeline
    }

    /// Records into `timeline` from now on.
    pub(crate) fn set_timeline(&mut self, timeline: Timeline) {
        self.timeline = timeline;
    }

    /// Autotune: the collectives' segment size from the next response on; whether they
    /// read it.
    pub(crate) fn set_segment_bytes(&self, n: usize) -> bool {
        self.collectives.set_segment_bytes(n)
    }

    /// Wakes and fails anything waiting inside the collectives (the engine is stopping).
    pub(crate) fn abort(&self, reason: &str) {
        self.collectives.abort(reason);
    }

    /// Runs `resp` with this rank's `entries` for its tensors, in order (`None` where this rank
    /// has none: it joined).
    pub(crate) fn run(&mut self, resp: Response, mut entries: Vec<Option<Entry>>) -> Completions {
        self.seq += 1;
        let rank = self.rank;
        if self.timeline.is_enabled() {
            // Every answer ends its names' negotiation, held here or not, failed or not.
            for t in &resp.tensors {
                self.timeline.negotiate_end(&t.name);
            }
        }
        if let Some(err) = resp.error {
            let outcome = Outcome::Mismatch {
                field: err.field,
                detail: err.message,
            };
            return Completions::new(rank, entries, outcome);
        }
        // Timeline lanes of the tensors this rank holds; nothing is built when it is off.
        let phase = if self.timeline.is_enabled() {
            let phase = resp.kind.name().to_ascii_uppercase();
            for (t, _) in resp
                .tensors
                .iter()
                .zip(&entries)
                .filter(|(_, e)| e.is_some())
            {
                self.timeline.begin(&t.name, &phase);
            }
            Some(phase)
        } else {
            None
        };
        let result = match resp.kind {
            CollectiveKind::Allreduce => self
                .allreduce(&resp, &mut entries)
                .map(|()| Completion::default()),
            CollectiveKind::Allgather => self.allgather(&resp, &entries),
            CollectiveKind::Broadcast => self.broadcast(&resp, &mut entries),
            CollectiveKind::Alltoall => self.alltoall(&resp, &entries),
            CollectiveKind::Reducescatter => self.reducescatter(&resp, &entries),
            CollectiveKind::Barrier => self
                .collectives
                .barrier(self.seq, self.deadline())
                .map(|()| Completion::default()),
            CollectiveKind::Join => Ok(Completion {
                last_joined: Some(resp.root as usize),
                ..Completion::default()
            }),
        };
        if let Some(phase) = &phase {
            for (t, _) in resp
                .tensors
                .iter()
                .zip(&entries)
                .filter(|(_, e)| e.is_some())
            {
                self.timeline.end(&t.name, phase);
            }
        }
        let outcome = match result {
            Ok(template) => Outcome::Done(template),
            Err(cause) => {
                let names: Vec<&str> = resp.tensors.iter().map(|t| t.name.as_str()).collect();
                let cause = collective_error(rank, "collective", "", cause);
                let stop = cause.for_tensor(resp.kind.name(), &names.join(", "));
                Outcome::Failed {
                    cause,
                    stop: Some(stop),
                }
            }
        };
        Completions::new(rank, entries, outcome)
    }

    /// Flushes the timeline (the engine is stopping).
    pub(crate) fn finish(&mut self) {
        self.timeline.finish();
    }

    fn deadline(&self) -> std::time::Instant {
        deadline_after(self.op_timeout)
    }

    /// (prescale, postscale, op to run): Average runs as Sum with 1/size folded into postscale.
    fn scales(&self, resp: &Response) -> (f64, f64, ReduceOp) {
        let mut post = resp.postscale;
        let op = if resp.op == ReduceOp::Average {
            post /= self.size as f64;
            ReduceOp::Sum
        } else {
            resp.op
        };
        (resp.prescale, post, op)
    }

    fn allreduce(
        &mut self,
        resp: &Response,
        entries: &mut [Option<Entry>],
    ) -> Result<(), CollectiveError> {
        let dtype = resp.dtype;
        let (pre, post, op) = self.scales(resp);
        let deadline = self.deadline();
        let seq = self.seq;
        if let [
            Some(Entry {
                data: Some(data), ..
            }),
        ] = entries
        {
            // One tensor: reduce straight in the caller's buffer, no fusion copies.
            let buf = data.bytes_mut();
            if pre != 1.0 {
                reduce::scale(buf, dtype, pre);
            }
            let r = self.collectives.allreduce(buf, dtype, op, seq, deadline);
            if r.is_ok() && post != 1.0 {
                reduce::scale(buf, dtype, post);
            }
            return r;
        }
        let len = |t: &TensorInfo| numel(&t.shape) * dtype.size();
        let total = resp.tensors.iter().map(len).sum();
        let parts = resp.tensors.iter().zip(entries.iter()).map(|(t, e)| {
            let src = e
                .as_ref()
                .and_then(|e| e.data.as_deref())
                .map(|d| d.bytes());
            (len(t), src)
        });
        let buf = self.fusion.pack(total, parts, dtype, op, pre);
        let r = self.collectives.allreduce(buf, dtype, op, seq, deadline);
        if r.is_ok() {
            if post != 1.0 {
                reduce::scale(buf, dtype, post);
            }
            let parts = resp.tensors.iter().zip(entries.iter_mut()).map(|(t, e)| {
                let dst = e
                    .as_mut()
                    .and_then(|e| e.data.as_deref_mut())
                    .map(|d| d.bytes_mut());
                (len(t), dst)
            });
            self.fusion.unpack(parts);
        }
        r
    }

    fn allgather(
        &mut self,
        resp: &Response,
        entries: &[Option<Entry>],
    ) -> Result<Completion, CollectiveError> {
        let info = &resp.tensors[0];
        let rb = row_bytes(&info.shape, resp.dtype);
        let per_rank: Vec<usize> = info.first_dims.iter().map(|&d| d as usize * rb).collect();
        let mut out = OutputBuffer::zeroed(per_rank.iter().sum());
        let input = lent_input(entries);
        self.collectives.allgatherv(
            input,
            out.as_bytes_mut(),
            &per_rank,
            self.seq,
            self.deadline(),
        )?;
        Ok(Completion {
            output: Some(out),
            output_shape: with_dim0(&info.shape, info.first_dims.iter().sum()),
            ..Completion::default()
        })
    }

    fn broadcast(
        &mut self,
        resp: &Response,
        entries: &mut [Option<Entry>],
    ) -> Result<Completion, CollectiveError> {
        let len = numel(&resp.tensors[0].shape) * resp.dtype.size();
        let mut scratch;
        let buf: &mut [u8] = match entries[0].as_mut().and_then(|e| e.data.as_mut()) {
            Some(d) => d.bytes_mut(),
            None => {
                scratch = vec![0u8; len];
                &mut scratch
            }
        };
        self.collectives
            .broadcast(buf, resp.root as usize, self.seq, self.deadline())?;
        Ok(Completion::default())
    }

    fn alltoall(
        &mut self,
        resp: &Response,
        entries: &[Option<Entry>],
    ) -> Result<Completion, CollectiveError> {
        let info = &resp.tensors[0];
        let me = self.rank;
        let rb = row_bytes(&info.shape, resp.dtype);
        let send: Vec<usize> = info.splits[me].iter().map(|&r| r as usize * rb).collect();
        let received: Vec<u64> = info.splits.iter().map(|row| row[me]).collect();
        let recv: Vec<usize> = received.iter().map(|&r| r as usize * rb).collect();
        let mut out = OutputBuffer::zeroed(recv.iter().sum());
        let input = lent_input(entries);
        self.collectives.alltoallv(
            input,
            &send,
            out.as_bytes_mut(),
            &recv,
            self.seq,
            self.deadline(),
        )?;
        Ok(Completion {
            output: Some(out),
            output_shape: with_dim0(&info.shape, received.iter().sum()),
            received_splits: received,
            ..Completion::default()
        })
    }

    fn reducescatter(
        &mut self,
        resp: &Response,
        entries: &[Option<Entry>],
    ) -> Result<Completion, CollectiveError> {
        let info = &resp.tensors[0];
        let dtype = resp.dtype;
        let (pre, post, op) = self.scales(resp);
        let rows = info.shape.first().copied().unwrap_or(1);
        let rb = row_bytes(&info.shape, dtype).max(if info.shape.is_empty() {
            dtype.size()
        } else {
            0
        });
        let split = even_split(rows, self.size);
        let per_rank: Vec<usize> = split.iter().map(|&r| r as usize * rb).collect();
        let total: usize = per_rank.iter().sum();
        // The algorithm clobbers its input, and the caller's tensor must survive: work on a copy.
        let deadline = self.deadline();
        let input = entries[0].as_ref().and_then(|e| e.data.as_deref());
        let work = self
            .fusion
            .pack(total, [(total, input.map(|d| d.bytes()))], dtype, op, pre);
        let me = self.rank;
        let mut out = OutputBuffer::zeroed(per_rank[me]);
        self.collectives.reducescatter(
            work,
            out.as_bytes_mut(),
            &per_rank,
            dtype,
            op,
            self.seq,
            deadline,
        )?;
        if post != 1.0 {
            reduce::scale(out.as_bytes_mut(), dtype, post);
        }
        let mut shape = info.shape.clone();
        if !shape.is_empty() {
            shape[0] = split[me];
        }
        Ok(Completion {
            output: Some(out),
            output_shape: shape,
            ..Completion::default()
        })
    }
}

/// How one response ended, for every entry of it.
enum Outcome {
    /// Success: each entry gets its tensor back with a copy of this (the output goes to the
    /// first).
    Done(Completion),
    /// Negotiation failed: every entry fails with this mismatch.
    Mismatch { field: String, detail: String },
    /// The collective failed: every entry fails with `cause` (renamed for its tensor), and
    /// the engine stops on `stop`.
    Failed { cause: Error, stop: Option<Error> },
}

/// What [`Executor::run`] hands back: each entry this rank held with its result (iterate it),
/// and the error the engine must stop on, if any ([`Completions::take_stop`]).
pub(crate) struct Completions {
    rank: usize,
    entries: std::vec::IntoIter<Option<Entry>>,
    outcome: Outcome,
}

impl Completions {
    fn new(rank: usize, entries: Vec<Option<Entry>>, outcome: Outcome) -> Self {
        Self {
            rank,
            entries: entries.into_iter(),
            outcome,
        }
    }

    /// The error the engine must stop on: set when the collective itself failed.
    pub(crate) fn take_stop(&mut self) -> Option<Error> {
        match &mut self.outcome {
            Outcome::Failed { stop, .. } => stop.take(),
            _ => None,
        }
    }
}

impl Iterator for Completions {
    type Item = (Entry, Result<Completion, Error>);

    fn next(&mut self) -> Option<Self::Item> {
        let mut entry = self.entries.find_map(|e| e)?;
        let result = match &mut self.outcome {
            Outcome::Done(template) => Ok(Completion {
                data: entry.data.take(),
                output: template.output.take(),
                output_shape: template.output_shape.clone(),
                received_splits: template.received_splits.clone(),
                last_joined: template.last_joined,
            }),
            Outcome::Mismatch { field, detail } => Err(Error::Mismatch {
                rank: self.rank,
                tensor: entry.name.clone(),
                field: field.clone(),
                detail: detail.clone(),
            }),
            Outcome::Failed { cause, .. } => Err(cause.for_tensor("collective", &entry.name)),
        };
        Some((entry, result))
    }
}

fn numel(shape: &[u64]) -> usize {
    shape.iter().product::<u64>() as usize
}

fn row_bytes(shape: &[u64], dtype: DataType) -> usize {
    shape.iter().skip(1).product::<u64>() as usize * dtype.size()
}

/// The caller's bytes of the first entry, or nothing for a joined rank.
fn lent_input(entries: &[Option<Entry>]) -> &[u8] {
    entries
        .first()
        .and_then(|e| e.as_ref())
        .and_then(|e| e.data.as_ref())
        .map_or(&[], |d| d.bytes())
}

/// `shape` with its first dimension replaced (a scalar becomes a 1-D shape).
fn with_dim0(shape: &[u64], dim0: u64) -> Vec<u64> {
    let mut s = shape.to_vec();
    match s.first_mut() {
        Some(d) => *d = dim0,
        None => s.push(dim0),
    }
    s
}

/// Splits `rows` as evenly as possible over `n` ranks, earlier ranks taking the remainder.
pub(crate) fn even_split(rows: u64, n: usize) -> Vec<u64> {
    let n64 = n as u64;
    (0..n64)
        .map(|r| rows / n64 + u64::from(r < rows % n64))
        .collect()
}
