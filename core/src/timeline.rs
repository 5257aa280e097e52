//! A Chrome-trace timeline (`HOROVOD_TIMELINE=path`), written by rank 0 as in Horovod.
//!
//! Each tensor name gets its own lane (a trace "process"); a `NEGOTIATE` span runs from the
//! moment rank 0 submits the tensor until the coordinator's plan reaches it, then a span named
//! after the collective covers the data exchange. Inside the negotiation, a zero-length event
//! named after each rank marks when that rank's request reached the coordinator, so a slow
//! rank shows as the last tick. Open the file in `chrome://tracing` or
//! Perfetto. Writing is buffered; a failure to write disables the timeline with one warning,
//! it never fails the job.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

/// The timeline of one process (disabled when no path was given).
#[derive(Debug)]
pub struct Timeline {
    out: Option<BufWriter<File>>,
    start: Instant,
    lanes: HashMap<String, usize>,
    /// Tensors whose `NEGOTIATE` span is open.
    negotiating: HashSet<String>,
    first: bool,
    mark_cycles: bool,
}

impl Timeline {
    /// A timeline that records nothing.
    pub fn disabled() -> Self {
        Self {
            out: None,
            start: Instant::now(),
            lanes: HashMap::new(),
            negotiating: HashSet::new(),
            first: true,
            mark_cycles: false,
        }
    }

    /// Also records a `CYCLE_START` instant event at each [`mark_cycle`](Self::mark_cycle).
    pub fn with_cycles(mut self, on: bool) -> Self {
        self.mark_cycles = on;
        self
    }

    /// Marks the start of a coordinator round (when cycle marking is on): a global instant
    /// event, as Horovod's `HOROVOD_TIMELINE_MARK_CYCLES` writes.
    pub fn mark_cycle(&mut self) {
        if self.out.is_none() || !self.mark_cycles {
            return;
        }
        let ts = self.start.elapsed().as_micros();
        let text = format!(
            "{}{{\"name\":\"CYCLE_START\",\"ph\":\"i\",\"s\":\"g\",\"ts\":{ts},\"pid\":0,\"tid\":0}}",
            self.separator()
        );
        self.write(text.as_bytes());
    }

    /// Creates (truncates) the trace file at `path`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(b"[\n")?;
        Ok(Self {
            out: Some(out),
            start: Instant::now(),
            lanes: HashMap::new(),
            negotiating: HashSet::new(),
            first: true,
            mark_cycles: false,
        })
    }

    /// Whether events are being written.
    pub fn is_enabled(&self) -> bool {
        self.out.is_some()
    }

    /// Opens span `phase` on `tensor`'s lane.
    pub fn begin(&mut self, tensor: &str, phase: &str) {
        self.event(tensor, phase, 'B');
    }

    /// Closes span `phase` on `tensor`'s lane.
    pub fn end(&mut self, tensor: &str, phase: &str) {
        self.event(tensor, phase, 'E');
    }

    /// Opens `tensor`'s `NEGOTIATE` span at `at`, unless it is open already (the first of
    /// rank 0's submission and any rank's request opens it, as in Horovod).
    pub fn negotiate_start(&mut self, tensor: &str, at: Instant) {
        if self.out.is_none() || self.negotiating.contains(tensor) {
            return;
        }
        self.negotiating.insert(tensor.to_string());
        let ts = at.saturating_duration_since(self.start).as_micros();
        self.event_at(tensor, "NEGOTIATE", 'B', ts);
    }

    /// Closes `tensor`'s `NEGOTIATE` span (the coordinator's plan reached it).
    pub fn negotiate_end(&mut self, tensor: &str) {
        if self.negotiating.remove(tensor) {
            self.end(tensor, "NEGOTIATE");
        }
    }

    /// Marks on `tensor`'s lane that `rank`'s request for it reached the coordinator at `at`:
    /// a zero-length event named after the rank, as Horovod's per-rank negotiation ticks.
    pub fn rank_ready(&mut self, tensor: &str, rank: usize, at: Instant) {
        if self.out.is_none() {
            return;
        }
        self.negotiate_start(tensor, at);
        let ts = at.saturating_duration_since(self.start).as_micros();
        self.event_at(tensor, &rank.to_string(), 'X', ts);
    }

    fn event(&mut self, tensor: &str, phase: &str, ph: char) {
        let ts = self.start.elapsed().as_micros();
        self.event_at(tensor, phase, ph, ts);
    }

    fn event_at(&mut self, tensor: &str, phase: &str, ph: char, ts: u128) {
        if self.out.is_none() {
            return;
        }
        let next = self.lanes.len();
        let mut new_lane = false;
        let lane = *self.lanes.entry(tensor.to_string()).or_insert_with(|| {
            new_lane = true;
            next
        });
        let mut text = String::new();
        if new_lane {
            // Names the lane after the tensor in the trace viewer.
            text.push_str(&self.separator());
            text.push_str(&format!(
                "{{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":{lane},\"args\":{{\"name\":{}}}}}",
                json_string(tensor)
            ));
        }
        text.push_str(&self.separator());
        let dur = if ph == 'X' { ",\"dur\":0" } else { "" };
        text.push_str(&format!(
            "{{\"name\":{},\"ph\":\"{ph}\",\"ts\":{ts}{dur},\"pid\":{lane},\"tid\":0}}",
            json_string(phase)
        ));
        self.write(text.as_bytes());
    }

    fn separator(&mut self) -> String {
        if std::mem::take(&mut self.first) {
            String::new()
        } else {
            ",\n".to_string()
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some(out) = self.out.as_mut()
            && let Err(e) = out.write_all(bytes)
        {
            tracing::warn!("timeline disabled: cannot write: {e}");
            self.out = None;
        }
    }

    /// Closes the JSON array and flushes the file.
    pub fn finish(&mut self) {
        self.write(b"\n]\n");
        if let Some(mut out) = self.out.take()
            && let Err(e) = out.flush()
        {
            tracing::warn!("timeline: cannot flush: {e}");
        }
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        self.finish();
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
