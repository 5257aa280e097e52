//! [`ShmTransport`]: the `Transport` contract over shared-memory rings, one per ordered pair.
//!
//! How it works. Rank `s` owns, in its segment, one byte ring per destination `d`; it writes
//! a 16-byte frame header (tag, length) and then the payload into it, as far as there is room,
//! and publishes `sent` (bytes written, monotonic). Rank `d` reads from `s`'s mapping and
//! publishes `consumed`. A frame whose tag matches a receive op in the caller's slice streams
//! straight into that op's buffer; any other frame is copied into a per-sender queue (an
//! "unexpected message") so that later frames can move, and receive ops look in that queue
//! first, oldest first, which keeps same-tag messages in order. Every change rings the other
//! side's inbox bell, so a rank with nothing to do sleeps on its own futex.
//!
//! Caveat (as for TCP): once a send or receive op has started moving bytes, the caller must
//! keep passing it to `progress`/`wait` until it completes; a dropped half-moved op stalls
//! that peer's stream.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hora_transport::{AdaptiveSpin, Op, OpKind, Rank, Tag, Transport, TransportError, Waker};

use crate::{ShmConfig, ShmGroup};

const FRAME: usize = 16;

#[derive(Debug)]
struct Stashed {
    tag: Tag,
    data: Vec<u8>,
    len: usize,
}

impl Stashed {
    fn complete(&self) -> bool {
        self.data.len() == self.len
    }
}

#[derive(Debug, Clone, Copy)]
struct Stream {
    tag: Tag,
    len: usize,
    moved: usize,
    /// For an incoming frame: whether it goes to the stash (else to a receive op).
    stashed: bool,
}

#[derive(Debug)]
struct State {
    out: Vec<Option<Stream>>,
    inc: Vec<Option<Stream>>,
    stash: Vec<VecDeque<Stashed>>,
}

/// The shared-memory [`Transport`] for ranks on one host.
#[derive(Debug)]
pub struct ShmTransport {
    group: Arc<ShmGroup>,
    state: Mutex<State>,
    woken: Arc<AtomicBool>,
    /// Spin budgets of `wait` (data) and `recv_msg` (control), learnt separately: control
    /// waits often span a whole idle period, data waits a peer's step. The engine thread's
    /// control waits are mostly for its own caller's next request, so they yield.
    wait_spin: AdaptiveSpin,
    msg_spin: AdaptiveSpin,
}

impl ShmTransport {
    /// Connects like [`ShmGroup::connect`]; `cfg.ring_bytes` of 0 is raised to 1 MiB.
    pub fn connect(cfg: &ShmConfig) -> Result<Self, TransportError> {
        let mut cfg = cfg.clone();
        if cfg.ring_bytes < 4096 {
            cfg.ring_bytes = 1 << 20;
        }
        let group = Arc::new(ShmGroup::connect(&cfg)?);
        let n = group.size();
        let spin = group.spin();
        Ok(Self {
            group,
            state: Mutex::new(State {
                out: vec![None; n],
                inc: vec![None; n],
                stash: (0..n).map(|_| VecDeque::new()).collect(),
            }),
            woken: Arc::new(AtomicBool::new(false)),
            wait_spin: AdaptiveSpin::new(spin),
            msg_spin: AdaptiveSpin::yielding(spin),
        })
    }

    /// The group underneath (its allreduce can be used alongside).
    pub fn group(&self) -> &Arc<ShmGroup> {
        &self.group
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_peer(&self, peer: Rank) -> Result<(), TransportError> {
        if peer >= self.size() || peer == self.rank() {
            return Err(TransportError::InvalidPeer {
                peer,
                size: self.size(),
                me: self.rank(),
            });
        }
        Ok(())
    }

    /// Copies `src` into our ring for `dst` at stream position `pos` (wrapping).
    fn ring_write(&self, dst: Rank, pos: u64, src: &[u8]) {
        let r = self.group.ring_bytes();
        let at = (pos % r as u64) as usize;
        let first = src.len().min(r - at);
        let base = self.group.ring(self.rank(), dst);
        // SAFETY: [at, at+first) and [0, len-first) lie inside our ring for `dst`; the reader
        // only reads bytes below `sent`, and the writer checked there is room (they are past
        // what the reader consumed), so nobody reads these bytes now.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(at), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), base, src.len() - first);
        }
    }

    /// Copies bytes at stream position `pos` of `src`'s ring for us into `dst` (wrapping).
    fn ring_read(&self, src: Rank, pos: u64, dst: &mut [u8]) {
        let r = self.group.ring_bytes();
        let at = (pos % r as u64) as usize;
        let first = dst.len().min(r - at);
        let base = self.group.ring(src, self.rank());
        // SAFETY: the bytes lie inside `src`'s ring for us and below its published `sent`
        // (Acquire), so they are written; the writer does not touch them until we publish a
        // `consumed` past them.
        unsafe {
            std::ptr::copy_nonoverlapping(base.add(at), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(base, dst.as_mut_ptr().add(first), dst.len() - first);
        }
    }

    /// Moves what can move; returns whether every op is complete.
    fn progress_locked(
        &self,
        st: &mut State,
        ops: &mut [Op<'_>],
        drain_all: bool,
    ) -> Result<bool, TransportError> {
        self.group.check_not_aborted()?;
        let me = self.rank();
        let r = self.group.ring_bytes() as u64;
        // Sends.
        for op in ops.iter_mut().filter(|o| o.kind() == OpKind::Send) {
            if op.is_complete() {
                continue;
            }
            let d = op.peer();
            self.check_peer(d)?;
            let sent_ctr = &self.group.pair(me, d).sent.0;
            let sent = sent_ctr.load(Ordering::Relaxed);
            let consumed = self.group.pair(d, me).consumed.0.load(Ordering::Acquire);
            let mut room = r - (sent - consumed);
            let mut pos = sent;
            if !op.is_started() {
                if st.out[d].is_some() || room < FRAME as u64 {
                    continue;
                }
                let mut frame = [0u8; FRAME];
                frame[..8].copy_from_slice(&op.tag().0.to_le_bytes());
                frame[8..].copy_from_slice(&(op.len() as u64).to_le_bytes());
                self.ring_write(d, pos, &frame);
                pos += FRAME as u64;
                room -= FRAME as u64;
                op.mark_started();
                st.out[d] = Some(Stream {
                    tag: op.tag(),
                    len: op.len(),
                    moved: 0,
                    stashed: false,
                });
            }
            let Some(s) = st.out[d].as_mut() else {
                continue;
            };
            if s.tag != op.tag() || s.moved != op.done() {
                continue;
            }
            let n = (op.len() - op.done()).min(room as usize);
            if n > 0 {
                self.ring_write(d, pos, &op.remaining_send()[..n]);
                pos += n as u64;
                op.advance(n);
                s.moved += n;
            }
            if op.done() == op.len() {
                st.out[d] = None;
            }
            if pos != sent {
                sent_ctr.store(pos, Ordering::Release);
                self.group.ring_inbox(d);
            }
        }
        // Receives: the stash first (older messages), then the rings.
        for op in ops.iter_mut().filter(|o| o.kind() == OpKind::Recv) {
            if op.is_started() {
                continue;
            }
            let s = op.peer();
            self.check_peer(s)?;
            let q = &mut st.stash[s];
            if let Some(i) = q.iter().position(|m| m.tag == op.tag()) {
                if !q[i].complete() {
                    continue;
                }
                if q[i].len != op.len() {
                    return Err(length_error(s, op.tag(), q[i].len, op.len()));
                }
                let m = q.remove(i).expect("index from position");
                op.remaining_recv().copy_from_slice(&m.data);
                op.mark_started();
                op.advance(m.len);
            }
        }
        let srcs: Vec<Rank> = if drain_all {
            (0..self.size()).filter(|&p| p != me).collect()
        } else {
            let mut v: Vec<Rank> = ops
                .iter()
                .filter(|o| o.kind() == OpKind::Recv && !o.is_complete())
                .map(|o| o.peer())
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        for s in srcs {
            self.drain(st, ops, s)?;
        }
        Ok(ops.iter().all(|o| o.is_complete()))
    }

    /// Reads frames from `s`'s ring into matching receive ops or the stash.
    fn drain(&self, st: &mut State, ops: &mut [Op<'_>], s: Rank) -> Result<(), TransportError> {
        let me = self.rank();
        let consumed_ctr = &self.group.pair(me, s).consumed.0;
        let start = consumed_ctr.load(Ordering::Relaxed);
        let mut pos = start;
        loop {
            let sent = self.group.pair(s, me).sent.0.load(Ordering::Acquire);
            let avail = (sent - pos) as usize;
            match st.inc[s] {
                None => {
                    if avail < FRAME {
                        break;
                    }
                    let mut frame = [0u8; FRAME];
                    self.ring_read(s, pos, &mut frame);
                    pos += FRAME as u64;
                    let tag = Tag(u64::from_le_bytes(frame[..8].try_into().expect("8")));
                    let len = u64::from_le_bytes(frame[8..].try_into().expect("8")) as usize;
                    let waiting_in_stash = st.stash[s].iter().any(|m| m.tag == tag);
                    let target = ops.iter_mut().find(|o| {
                        o.kind() == OpKind::Recv
                            && o.peer() == s
                            && o.tag() == tag
                            && !o.is_started()
                    });
                    match target {
                        Some(op) if !waiting_in_stash => {
                            if op.len() != len {
                                return Err(length_error(s, tag, len, op.len()));
                            }
                            op.mark_started();
                            if len > 0 {
                                st.inc[s] = Some(Stream {
                                    tag,
                                    len,
                                    moved: 0,
                                    stashed: false,
                                });
                            }
                        }
                        _ => {
                            st.stash[s].push_back(Stashed {
                                tag,
                                data: Vec::with_capacity(len),
                                len,
                            });
                            if len > 0 {
                                st.inc[s] = Some(Stream {
                                    tag,
                                    len,
                                    moved: 0,
                                    stashed: true,
                                });
                            }
                        }
                    }
                }
                Some(mut cur) => {
                    let n = avail.min(cur.len - cur.moved);
                    if n == 0 {
                        break;
                    }
                    if cur.stashed {
                        let m = st.stash[s].back_mut().expect("the stream's stash entry");
                        let old = m.data.len();
                        m.data.resize(old + n, 0);
                        self.ring_read(s, pos, &mut m.data[old..]);
                    } else {
                        let Some(op) = ops.iter_mut().find(|o| {
                            o.kind() == OpKind::Recv
                                && o.peer() == s
                                && o.tag() == cur.tag
                                && o.is_started()
                                && !o.is_complete()
                                && o.done() == cur.moved
                        }) else {
                            // The op this frame streams into is not in this call's slice.
                            break;
                        };
                        self.ring_read(s, pos, &mut op.remaining_recv()[..n]);
                        op.advance(n);
                    }
                    pos += n as u64;
                    cur.moved += n;
                    st.inc[s] = (cur.moved < cur.len).then_some(cur);
                }
            }
        }
        if pos != start {
            consumed_ctr.store(pos, Ordering::Release);
            self.group.ring_inbox(s);
        }
        Ok(())
    }

    /// Health of the peers of the unfinished ops (or of everyone).
    fn check(&self, peer: Option<Rank>) -> Result<(), TransportError> {
        self.group.check_health(peer.unwrap_or(usize::MAX))
    }
}

fn length_error(peer: Rank, tag: Tag, got: usize, want: usize) -> TransportError {
    TransportError::Protocol {
        peer,
        detail: format!("message {tag:?} is {got} bytes, receive expected {want}"),
    }
}

impl Transport for ShmTransport {
    fn rank(&self) -> Rank {
        self.group.rank()
    }

    fn size(&self) -> usize {
        self.group.size()
    }

    fn progress(&self, ops: &mut [Op<'_>]) -> Result<bool, TransportError> {
        let mut st = self.lock();
        self.progress_locked(&mut st, ops, false)
    }

    fn wait(&self, ops: &mut [Op<'_>], deadline: Instant) -> Result<(), TransportError> {
        let start = Instant::now();
        loop {
            let bell = self.group.inbox_value();
            if self.progress(ops)? {
                return Ok(());
            }
            let pending = ops.iter().find(|o| !o.is_complete()).map(|o| o.peer());
            let now = Instant::now();
            if now >= deadline {
                if self.progress(ops)? {
                    return Ok(());
                }
                let op = ops.iter().find(|o| !o.is_complete());
                return Err(TransportError::Timeout {
                    peer: pending,
                    after: start.elapsed(),
                    what: format!("{:?}", op.map(|o| (o.kind(), o.tag()))),
                });
            }
            if self.wait_spin.spin(|| self.group.inbox_value() != bell) {
                continue;
            }
            if let Err(e) = self.check(pending) {
                // A peer that delivered everything and then left is not a failure.
                if self.progress(ops)? {
                    return Ok(());
                }
                return Err(e);
            }
            let left = deadline.saturating_duration_since(now);
            self.group.sleep_on_inbox(
                &|| self.group.inbox_value() != bell,
                left.min(Duration::from_millis(5)),
            );
        }
    }

    fn send_msg(&self, peer: Rank, tag: Tag, msg: &[u8]) -> Result<(), TransportError> {
        self.check_peer(peer)?;
        self.wait(
            &mut [Op::send(peer, tag, msg)],
            hora_transport::deadline_after(Duration::from_secs(300)),
        )
    }

    fn recv_msg(
        &self,
        from: Option<Rank>,
        tag: Tag,
        deadline: Instant,
    ) -> Result<Option<(Rank, Vec<u8>)>, TransportError> {
        if let Some(p) = from {
            self.check_peer(p)?;
        }
        let start = Instant::now();
        loop {
            let bell = self.group.inbox_value();
            {
                let mut st = self.lock();
                self.progress_locked(&mut st, &mut [], true)?;
                let found = (0..self.size())
                    .filter(|&p| from.is_none_or(|f| f == p))
                    .find_map(|p| {
                        let q = &mut st.stash[p];
                        let i = q.iter().position(|m| m.tag == tag)?;
                        q[i].complete()
                            .then(|| (p, q.remove(i).expect("index").data))
                    });
                if found.is_some() {
                    return Ok(found);
                }
            }
            if self.woken.swap(false, Ordering::AcqRel) {
                return Ok(None);
            }
            let now = Instant::now();
            // A message or a wake-up is usually close when the job is busy.
            if now < deadline
                && self
                    .msg_spin
                    .spin(|| self.group.inbox_value() != bell || self.woken.load(Ordering::Acquire))
            {
                continue;
            }
            self.check(from)?;
            if now >= deadline {
                return Err(TransportError::Timeout {
                    peer: from,
                    after: start.elapsed(),
                    what: format!("a message with {tag:?}"),
                });
            }
            let woken = &self.woken;
            self.group.sleep_on_inbox(
                &|| self.group.inbox_value() != bell || woken.load(Ordering::Acquire),
                deadline
                    .saturating_duration_since(now)
                    .min(Duration::from_millis(5)),
            );
        }
    }

    fn waker(&self) -> Waker {
        let group = self.group.clone();
        let woken = self.woken.clone();
        Waker::new(move || {
            woken.store(true, Ordering::Release);
            group.ring_inbox(group.rank());
        })
    }

    fn abort(&self, reason: &str) {
        self.group.abort(reason);
    }
}
