//! Runs one response: fusion copy-in, the collective, scaling, copy-out, completion.

use hora_transport::CollectiveError;

use crate::coordinator::{Response, TensorInfo};
use crate::error::Error;
use crate::handle::{Completion, OutputBuffer};
use crate::reduce;
use crate::types::{CollectiveKind, DataType, ReduceOp};

use super::Entry;
use super::background::Background;

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

impl Background {
    pub(super) fn execute(&mut self, resp: Response) -> Result<(), Error> {
        self.seq += 1;
        let rank = self.topology.rank;
        let entries: Vec<Option<Entry>> = resp
            .tensors
            .iter()
            .map(|t| self.table.remove(&t.name))
            .collect();
        if let Some(err) = &resp.error {
            for (info, entry) in resp.tensors.iter().zip(entries) {
                if let Some(entry) = entry {
                    let e = Error::Mismatch {
                        rank,
                        tensor: info.name.clone(),
                        field: err.field.clone(),
                        detail: err.message.clone(),
                    };
                    self.finish(entry, Err(e));
                }
            }
            return Ok(());
        }
        // Timeline lanes of the tensors this rank holds; nothing is built when it is off.
        let (phase, present) = if self.timeline.is_enabled() {
            let phase = resp.kind.name().to_ascii_uppercase();
            let present: Vec<String> = resp
                .tensors
                .iter()
                .zip(&entries)
                .filter(|(_, e)| e.is_some())
                .map(|(t, _)| t.name.clone())
                .collect();
            for name in &present {
                self.timeline.end(name, "NEGOTIATE");
                self.timeline.begin(name, &phase);
            }
            (phase, present)
        } else {
            (String::new(), Vec::new())
        };
        let result = match resp.kind {
            CollectiveKind::Allreduce => self.run_allreduce(&resp, entries),
            CollectiveKind::Allgather => self.run_allgather(&resp, entries),
            CollectiveKind::Broadcast => self.run_broadcast(&resp, entries),
            CollectiveKind::Alltoall => self.run_alltoall(&resp, entries),
            CollectiveKind::Reducescatter => self.run_reducescatter(&resp, entries),
            CollectiveKind::Barrier => {
                let r = self.collectives.barrier(self.seq, self.op_deadline());
                self.complete_all(entries, r.map(|_| ()), Completion::default)
            }
            CollectiveKind::Join => {
                let last = resp.root as usize;
                self.complete_all(entries, Ok(()), || Completion {
                    last_joined: Some(last),
                    ..Completion::default()
                })
            }
        };
        for name in &present {
            self.timeline.end(name, &phase);
        }
        result.map_err(|e| {
            let names: Vec<&str> = resp.tensors.iter().map(|t| t.name.as_str()).collect();
            self.with_root_cause(e.for_tensor(resp.kind.name(), &names.join(", ")))
        })
    }

    /// Completes entries with a shared outcome, handing each caller's tensor back alongside
    /// what `make` builds; on failure returns the error for the engine to stop on (the entries
    /// are failed too).
    fn complete_all(
        &self,
        entries: Vec<Option<Entry>>,
        outcome: Result<(), CollectiveError>,
        mut make: impl FnMut() -> Completion,
    ) -> Result<(), Error> {
        match outcome {
            Ok(()) => {
                for mut entry in entries.into_iter().flatten() {
                    let c = Completion {
                        data: entry.data.take(),
                        ..make()
                    };
                    self.finish(entry, Ok(c));
                }
                Ok(())
            }
            Err(e) => {
                let err = Error::collective(self.topology.rank, "collective", "", e);
                for entry in entries.into_iter().flatten() {
                    let mine = err.for_tensor("collective", &entry.req.name);
                    self.finish(entry, Err(mine));
                }
                Err(err)
            }
        }
    }

    fn scales(&self, resp: &Response) -> (f64, f64, ReduceOp) {
        let mut post = resp.postscale;
        let op = if resp.op == ReduceOp::Average {
            post /= self.topology.size as f64;
            ReduceOp::Sum
        } else {
            resp.op
        };
        (resp.prescale, post, op)
    }

    fn run_allreduce(
        &mut self,
        resp: &Response,
        mut entries: Vec<Option<Entry>>,
    ) -> Result<(), Error> {
        let dtype = resp.dtype;
        let (pre, post, op) = self.scales(resp);
        let deadline = self.op_deadline();
        let seq = self.seq;
        let single = entries.len() == 1 && entries[0].as_ref().is_some_and(|e| e.data.is_some());
        let outcome = if single {
            // One tensor: reduce straight in the caller's buffer, no fusion copies.
            let entry = entries[0].as_mut().expect("checked above");
            let buf = entry.data.as_mut().expect("checked above").bytes_mut();
            if pre != 1.0 {
                reduce::scale(buf, dtype, pre);
            }
            let r = self.collectives.allreduce(buf, dtype, op, seq, deadline);
            if r.is_ok() && post != 1.0 {
                reduce::scale(buf, dtype, post);
            }
            r
        } else {
            let sizes: Vec<usize> = resp
                .tensors
                .iter()
                .map(|t| numel(&t.shape) * dtype.size())
                .collect();
            let total: usize = sizes.iter().sum();
            let mut fusion = std::mem::take(&mut self.fusion);
            if fusion.len() < total {
                fusion.resize(total, 0);
            }
            let mut off = 0;
            for (entry, &len) in entries.iter().zip(&sizes) {
                let dst = &mut fusion[off..off + len];
                match entry.as_ref().and_then(|e| e.data.as_ref()) {
                    Some(d) => {
                        dst.copy_from_slice(d.bytes());
                        if pre != 1.0 {
                            reduce::scale(dst, dtype, pre);
                        }
                    }
                    // A joined rank contributes the identity, unscaled.
                    None => reduce::fill_identity(dst, dtype, op),
                }
                off += len;
            }
            let buf = &mut fusion[..total];
            let r = self.collectives.allreduce(buf, dtype, op, seq, deadline);
            if r.is_ok() {
                if post != 1.0 {
                    reduce::scale(buf, dtype, post);
                }
                let mut off = 0;
                for (entry, &len) in entries.iter_mut().zip(&sizes) {
                    if let Some(d) = entry.as_mut().and_then(|e| e.data.as_mut()) {
                        d.bytes_mut().copy_from_slice(&buf[off..off + len]);
                    }
                    off += len;
                }
            }
            self.fusion = fusion;
            r
        };
        self.complete_all(entries, outcome, Completion::default)
    }

    fn run_allgather(&mut self, resp: &Response, entries: Vec<Option<Entry>>) -> Result<(), Error> {
        let info: &TensorInfo = &resp.tensors[0];
        let rb = row_bytes(&info.shape, resp.dtype);
        let per_rank: Vec<usize> = info.first_dims.iter().map(|&d| d as usize * rb).collect();
        let mut out = OutputBuffer::zeroed(per_rank.iter().sum());
        let input = lent_input(&entries);
        let r = self.collectives.allgatherv(
            input,
            out.as_bytes_mut(),
            &per_rank,
            self.seq,
            self.op_deadline(),
        );
        let shape = with_dim0(&info.shape, info.first_dims.iter().sum());
        let mut out = Some(out);
        self.complete_all(entries, r, || Completion {
            output: out.take(),
            output_shape: shape.clone(),
            ..Completion::default()
        })
    }

    fn run_broadcast(
        &mut self,
        resp: &Response,
        mut entries: Vec<Option<Entry>>,
    ) -> Result<(), Error> {
        let len = numel(&resp.tensors[0].shape) * resp.dtype.size();
        let mut scratch;
        let buf: &mut [u8] = match entries[0].as_mut().and_then(|e| e.data.as_mut()) {
            Some(d) => d.bytes_mut(),
            None => {
                scratch = vec![0u8; len];
                &mut scratch
            }
        };
        let r = self
            .collectives
            .broadcast(buf, resp.root as usize, self.seq, self.op_deadline());
        self.complete_all(entries, r, Completion::default)
    }

    fn run_alltoall(&mut self, resp: &Response, entries: Vec<Option<Entry>>) -> Result<(), Error> {
        let info = &resp.tensors[0];
        let me = self.topology.rank;
        let rb = row_bytes(&info.shape, resp.dtype);
        let send: Vec<usize> = info.splits[me].iter().map(|&r| r as usize * rb).collect();
        let received: Vec<u64> = info.splits.iter().map(|row| row[me]).collect();
        let recv: Vec<usize> = received.iter().map(|&r| r as usize * rb).collect();
        let mut out = OutputBuffer::zeroed(recv.iter().sum());
        let input = lent_input(&entries);
        let r = self.collectives.alltoallv(
            input,
            &send,
            out.as_bytes_mut(),
            &recv,
            self.seq,
            self.op_deadline(),
        );
        let shape = with_dim0(&info.shape, received.iter().sum());
        let mut out = Some(out);
        self.complete_all(entries, r, || Completion {
            output: out.take(),
            output_shape: shape.clone(),
            received_splits: received.clone(),
            ..Completion::default()
        })
    }

    fn run_reducescatter(
        &mut self,
        resp: &Response,
        entries: Vec<Option<Entry>>,
    ) -> Result<(), Error> {
        let info = &resp.tensors[0];
        let dtype = resp.dtype;
        let (pre, post, op) = self.scales(resp);
        let rows = info.shape.first().copied().unwrap_or(1);
        let rb = row_bytes(&info.shape, dtype).max(if info.shape.is_empty() {
            dtype.size()
        } else {
            0
        });
        let split = even_split(rows, self.topology.size);
        let per_rank: Vec<usize> = split.iter().map(|&r| r as usize * rb).collect();
        let total: usize = per_rank.iter().sum();
        // The algorithm clobbers its input, and the caller's tensor must survive: work on a copy.
        let mut work = std::mem::take(&mut self.fusion);
        if work.len() < total {
            work.resize(total, 0);
        }
        match entries[0].as_ref().and_then(|e| e.data.as_ref()) {
            Some(d) => {
                work[..total].copy_from_slice(d.bytes());
                if pre != 1.0 {
                    reduce::scale(&mut work[..total], dtype, pre);
                }
            }
            None => reduce::fill_identity(&mut work[..total], dtype, op),
        }
        let me = self.topology.rank;
        let mut out = OutputBuffer::zeroed(per_rank[me]);
        let r = self.collectives.reducescatter(
            &mut work[..total],
            out.as_bytes_mut(),
            &per_rank,
            dtype,
            op,
            self.seq,
            self.op_deadline(),
        );
        self.fusion = work;
        if r.is_ok() && post != 1.0 {
            reduce::scale(out.as_bytes_mut(), dtype, post);
        }
        let mut shape = info.shape.clone();
        if !shape.is_empty() {
            shape[0] = split[me];
        }
        let mut out = Some(out);
        self.complete_all(entries, r, || Completion {
            output: out.take(),
            output_shape: shape.clone(),
            ..Completion::default()
        })
    }
}
