//! One peer's state: its connection (once made), the message stream in each direction, and the
//! messages that arrived before anyone asked for them.
//!
//! How it works. Inbound, a connection is a sequence of frames (see [`crate::frame`]). A header
//! is matched against the receive ops of the current call: if an op with that tag is waiting
//! (and nothing with that tag is queued ahead of it), the payload goes straight into the op's
//! buffer; otherwise the whole message is read into the per-tag FIFO of unexpected messages,
//! which later ops and `recv_msg` consume first. Small reads go through a 64 KiB staging buffer
//! so a header and a small payload cost one `recv`; large remainders are read in place.
//!
//! The state survives across calls. If a payload was going to an op and the next call no longer
//! contains that op, the rest of the message is spilled into the queue, remembering how many
//! bytes the op already holds. When the op comes back (same tag, same progress) it picks up the
//! spilled bytes and the stream is redirected to it again, so nothing is lost. If a *different*
//! receive meets such a partial message, the first bytes are gone: that receive fails with
//! `Protocol` ("partly delivered to an abandoned receive").
//!
//! Outbound, one frame is written at a time (`sendmsg` of header + payload, so a small message
//! is one system call). Frames of ops are written straight from the caller's buffer; messages
//! from `send_msg` are copied only when the kernel does not take them at once. If a call sends
//! to a peer while a frame of an op that is no longer present is half written, the stream cannot
//! continue without corrupting it, so the connection is declared lost.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use hora_transport::{Op, OpKind, Rank, Tag, TransportError};

use crate::frame::{HEADER_LEN, Header};
use crate::sys;

/// Staging buffer for small reads.
const STAGE: usize = 64 * 1024;
/// A payload remainder at least this long is read straight into its destination.
const DIRECT_MIN: usize = 16 * 1024;
/// Bytes read (and, separately, written) on one connection per call, so one busy direction
/// cannot starve the other ops of a full-duplex wait.
const BUDGET: usize = 8 << 20;

/// Why a pump stopped with an error.
#[derive(Debug)]
pub(crate) enum PumpError {
    /// The connection is gone (EOF, reset, or a stream that cannot continue).
    Lost(String),
    /// A message does not fit the op it was matched to; the stream itself is fine.
    Protocol(String),
    /// The peer broke the framing; the connection cannot be used any more.
    Fatal(String),
}

/// A message received before anyone asked for it.
#[derive(Debug)]
struct Queued {
    /// Payload bytes `skipped..skipped + data.len()`.
    data: Vec<u8>,
    /// Whole message length.
    len: usize,
    /// Bytes that went to an op before the op was abandoned (0 for an ordinary message).
    skipped: usize,
    /// Whether every byte has arrived.
    complete: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The started, incomplete receive op of this call with the payload's tag.
    Op,
    /// The back of the unexpected queue for the payload's tag.
    Queue,
    /// Nobody: the message failed its receive (length mismatch) and is skipped.
    Discard,
}

#[derive(Debug)]
struct InPayload {
    tag: Tag,
    len: usize,
    got: usize,
    to: Target,
}

struct Inbound {
    stage: Box<[u8]>,
    start: usize,
    end: usize,
    hdr: [u8; HEADER_LEN],
    hdr_have: usize,
    payload: Option<InPayload>,
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbound")
            .field("staged", &(self.end - self.start))
            .field("hdr_have", &self.hdr_have)
            .field("payload", &self.payload)
            .finish()
    }
}

#[derive(Debug)]
enum OutFrame {
    /// A frame whose payload is an op's buffer; `sent` counts header and payload bytes.
    Op {
        tag: Tag,
        len: usize,
        hdr: [u8; HEADER_LEN],
        sent: usize,
    },
    /// A frame we own (header included).
    Owned { buf: Vec<u8>, sent: usize },
}

#[derive(Debug, Default)]
struct Outbound {
    cur: Option<OutFrame>,
    backlog: VecDeque<Vec<u8>>,
}

/// An established, authenticated connection (non-blocking, TCP_NODELAY).
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    fd: RawFd,
    inb: Inbound,
    out: Outbound,
}

impl Conn {
    /// Takes over a stream whose handshake (and verdict) is done; `sockbuf` overrides the
    /// kernel's socket buffer autotuning ([`TcpConfig::sockbuf`](crate::TcpConfig::sockbuf)).
    pub(crate) fn new(stream: TcpStream, sockbuf: Option<usize>) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
        if let Some(bytes) = sockbuf {
            sys::set_buffer_sizes(stream.as_raw_fd(), bytes)?;
        }
        let fd = stream.as_raw_fd();
        Ok(Self {
            stream,
            fd,
            inb: Inbound {
                stage: vec![0u8; STAGE].into_boxed_slice(),
                start: 0,
                end: 0,
                hdr: [0; HEADER_LEN],
                hdr_have: 0,
                payload: None,
            },
            out: Outbound::default(),
        })
    }

    /// The socket, for poll sets.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// Whether there are bytes we own waiting to be written.
    fn has_owned_output(&self) -> bool {
        matches!(self.out.cur, Some(OutFrame::Owned { .. })) || !self.out.backlog.is_empty()
    }
}

/// Everything this rank knows about one peer.
#[derive(Debug, Default)]
pub(crate) struct PeerState {
    /// The connection, once made (kept after loss so its fd number stays reserved).
    pub(crate) conn: Option<Conn>,
    /// Our own outgoing connection attempt is under way.
    pub(crate) connecting: bool,
    /// Why the connection was lost, once it was.
    pub(crate) lost: Option<String>,
    unexpected: HashMap<Tag, VecDeque<Queued>>,
    /// Whether this peer is counted in the transport's "owned output pending" counter.
    backlog_counted: bool,
}

impl PeerState {
    /// The connection if it is usable.
    pub(crate) fn live(&self) -> Option<&Conn> {
        self.conn.as_ref().filter(|_| self.lost.is_none())
    }

    /// Marks the connection lost and shuts it down so the peer notices too.
    ///
    /// What the peer sent before it went away is read first: a failed *send* is often how a
    /// dead peer is noticed, and its last message (why it stopped) may be waiting unread in
    /// the kernel; once lost, the socket is never read again.
    pub(crate) fn mark_lost(&mut self, detail: String) {
        if self.lost.is_none() && self.conn.is_some() {
            // No op of this call can match peer `Rank::MAX`: everything read is queued.
            let _ = self.pump_in(Rank::MAX, &mut [], true);
        }
        if let Some(conn) = &self.conn {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        if self.lost.is_none() {
            tracing::debug!(%detail, "peer connection lost");
            self.lost = Some(detail);
        }
    }

    /// Shuts the socket down (abort): both sides see the stream end at once.
    pub(crate) fn shutdown(&self) {
        if let Some(conn) = &self.conn {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
    }

    /// Keeps the transport-wide count of peers with owned output in step with this peer.
    pub(crate) fn sync_backlog(&mut self, counter: &std::sync::atomic::AtomicUsize) {
        use std::sync::atomic::Ordering;
        let pending = self.live().is_some_and(Conn::has_owned_output);
        if pending != self.backlog_counted {
            self.backlog_counted = pending;
            if pending {
                counter.fetch_add(1, Ordering::AcqRel);
            } else {
                counter.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Poll events this peer's connection needs for `ops` (0 if nothing to wait for).
    pub(crate) fn poll_events(&self, peer: Rank, ops: &[Op<'_>]) -> i16 {
        let Some(conn) = self.live() else { return 0 };
        let sending = ops
            .iter()
            .any(|o| o.peer() == peer && o.kind() == OpKind::Send && !o.is_complete());
        // Mirrors `progress`: it reads for receives, and for sends the kernel refused.
        let mut ev = 0;
        if sending || wants_input(ops, peer) {
            ev |= libc::POLLIN;
        }
        if sending || conn.has_owned_output() {
            ev |= libc::POLLOUT;
        }
        ev
    }

    /// Moves everything that can move for the ops of `peer` without blocking.
    pub(crate) fn progress(
        &mut self,
        peer: Rank,
        ops: &mut [Op<'_>],
    ) -> Result<(), TransportError> {
        self.match_queued(peer, ops)?;
        if self.live().is_some() {
            let receiving = wants_input(ops, peer);
            // Reading only when a receive needs it saves a system call per small message; a
            // send the kernel cannot take also reads, so two ranks sending large messages to
            // each other before receiving do not deadlock on full socket buffers.
            let res = self.pump_out(peer, ops).and_then(|blocked| {
                if receiving || blocked {
                    self.pump_in(peer, ops, blocked)
                } else {
                    Ok(())
                }
            });
            self.absorb(peer, res)?;
        }
        if let Some(detail) = &self.lost
            && ops.iter().any(|o| o.peer() == peer && !o.is_complete())
        {
            return Err(TransportError::ConnectionLost {
                peer,
                detail: detail.clone(),
            });
        }
        Ok(())
    }

    /// Reads and writes what can move with no ops in hand (for `recv_msg` and backlog flushes).
    pub(crate) fn pump_idle(&mut self, peer: Rank) -> Result<(), TransportError> {
        if self.live().is_none() {
            return Ok(());
        }
        let res = self
            .pump_in(peer, &mut [], true)
            .and_then(|_| self.pump_out(peer, &mut []));
        self.absorb(peer, res.map(drop))
    }

    /// Writes only (flushes `send_msg` backlog).
    pub(crate) fn flush(&mut self, peer: Rank) -> Result<(), TransportError> {
        if self.live().is_none() {
            return Ok(());
        }
        let res = self.pump_out(peer, &mut []);
        self.absorb(peer, res.map(drop))
    }

    /// Turns a pump error into state and a transport error.
    fn absorb(&mut self, peer: Rank, res: Result<(), PumpError>) -> Result<(), TransportError> {
        match res {
            Ok(()) => Ok(()),
            Err(PumpError::Lost(detail)) => {
                self.mark_lost(detail);
                Ok(())
            }
            Err(PumpError::Protocol(detail)) => Err(TransportError::Protocol { peer, detail }),
            Err(PumpError::Fatal(detail)) => {
                self.mark_lost(format!("protocol violation: {detail}"));
                Err(TransportError::Protocol { peer, detail })
            }
        }
    }

    /// Takes the next complete message with `tag`, if one is queued.
    pub(crate) fn take_message(
        &mut self,
        peer: Rank,
        tag: Tag,
    ) -> Result<Option<Vec<u8>>, TransportError> {
        let Some(q) = self.unexpected.get_mut(&tag) else {
            return Ok(None);
        };
        match q.front() {
            Some(m) if m.complete => {
                let m = q.pop_front().expect("front exists");
                if m.skipped > 0 {
                    return Err(abandoned(peer, tag));
                }
                Ok(Some(m.data))
            }
            _ => Ok(None),
        }
    }

    /// Queues a variable-length message, writing as much as the kernel takes right now.
    pub(crate) fn send_message(
        &mut self,
        peer: Rank,
        tag: Tag,
        msg: &[u8],
    ) -> Result<(), TransportError> {
        let Some(conn) = self.conn.as_mut().filter(|_| self.lost.is_none()) else {
            let detail = self.lost.clone().unwrap_or_else(|| "not connected".into());
            return Err(TransportError::ConnectionLost { peer, detail });
        };
        let hdr = Header {
            tag,
            len: msg.len(),
        }
        .encode();
        if conn.out.cur.is_none() && conn.out.backlog.is_empty() {
            let sent = match send_retrying(conn.fd, &hdr, msg) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => {
                    self.mark_lost(e.to_string());
                    return Err(TransportError::ConnectionLost {
                        peer,
                        detail: e.to_string(),
                    });
                }
            };
            if sent < HEADER_LEN + msg.len() {
                let mut rest = Vec::with_capacity(HEADER_LEN + msg.len() - sent);
                if sent < HEADER_LEN {
                    rest.extend_from_slice(&hdr[sent..]);
                    rest.extend_from_slice(msg);
                } else {
                    rest.extend_from_slice(&msg[sent - HEADER_LEN..]);
                }
                conn.out.cur = Some(OutFrame::Owned { buf: rest, sent: 0 });
            }
            return Ok(());
        }
        let mut buf = Vec::with_capacity(HEADER_LEN + msg.len());
        buf.extend_from_slice(&hdr);
        buf.extend_from_slice(msg);
        conn.out.backlog.push_back(buf);
        self.flush(peer)
    }

    /// Serves the receive ops of `peer` from the unexpected queue (before any new bytes).
    fn match_queued(&mut self, peer: Rank, ops: &mut [Op<'_>]) -> Result<(), TransportError> {
        for op in ops.iter_mut() {
            if op.peer() != peer || op.kind() != OpKind::Recv || op.is_complete() {
                continue;
            }
            let tag = op.tag();
            let inflight = self.inflight_is(tag);
            let Some(q) = self.unexpected.get_mut(&tag) else {
                continue;
            };
            let Some(front) = q.front() else { continue };
            if op.is_started() {
                // Only a resumed op picks up a spilled remainder; otherwise it is the direct
                // target of the payload in flight and nothing is queued for it.
                if front.skipped != op.done() || front.len != op.len() {
                    continue;
                }
            } else if front.skipped > 0 || front.len != op.len() {
                let m = q.pop_front().expect("front exists");
                let err = if m.skipped > 0 {
                    abandoned(peer, tag)
                } else {
                    length_mismatch(peer, tag, m.len, op.len())
                };
                if !m.complete {
                    self.redirect_inflight(tag, Target::Discard);
                }
                return Err(err);
            }
            if !q.front().expect("front exists").complete && !inflight {
                // The connection ended in the middle of this message; the lost check reports it.
                continue;
            }
            let m = q.pop_front().expect("front exists");
            op.mark_started();
            op.remaining_recv()[..m.data.len()].copy_from_slice(&m.data);
            op.advance(m.data.len());
            if !m.complete {
                // The rest is still arriving: send it straight to the op from now on.
                self.redirect_inflight(tag, Target::Op);
            }
        }
        Ok(())
    }

    fn inflight_is(&self, tag: Tag) -> bool {
        self.conn
            .as_ref()
            .and_then(|c| c.inb.payload.as_ref())
            .is_some_and(|p| p.tag == tag && p.to == Target::Queue)
    }

    fn redirect_inflight(&mut self, tag: Tag, to: Target) {
        if let Some(p) = self.conn.as_mut().and_then(|c| c.inb.payload.as_mut())
            && p.tag == tag
            && p.to == Target::Queue
        {
            p.to = to;
        }
    }

    /// Reads frames until the socket is drained (or the budget is spent); unless `drain`, stops
    /// as soon as no receive op of `peer` is left waiting.
    fn pump_in(&mut self, peer: Rank, ops: &mut [Op<'_>], drain: bool) -> Result<(), PumpError> {
        let Self {
            conn, unexpected, ..
        } = self;
        let conn = conn.as_mut().expect("pump_in needs a connection");
        let inb = &mut conn.inb;

        // The op the payload in flight was going to, if it is still in this call.
        let mut cur = None;
        if let Some(pl) = &mut inb.payload
            && pl.to == Target::Op
        {
            cur = find_op(ops, peer, OpKind::Recv, pl.tag, pl.len, pl.got);
            if cur.is_none() {
                pl.to = Target::Queue;
                unexpected.entry(pl.tag).or_default().push_back(Queued {
                    data: Vec::new(),
                    len: pl.len,
                    skipped: pl.got,
                    complete: false,
                });
            }
        }

        let mut budget = BUDGET;
        loop {
            // Consume what is staged.
            while inb.start < inb.end {
                match &mut inb.payload {
                    None => {
                        let take = (HEADER_LEN - inb.hdr_have).min(inb.end - inb.start);
                        inb.hdr[inb.hdr_have..inb.hdr_have + take]
                            .copy_from_slice(&inb.stage[inb.start..inb.start + take]);
                        inb.hdr_have += take;
                        inb.start += take;
                        if inb.hdr_have == HEADER_LEN {
                            inb.hdr_have = 0;
                            let h = Header::decode(&inb.hdr).map_err(PumpError::Fatal)?;
                            begin_payload(inb, unexpected, ops, peer, h, &mut cur)?;
                        }
                    }
                    Some(pl) => {
                        let n = (pl.len - pl.got).min(inb.end - inb.start);
                        let src = &inb.stage[inb.start..inb.start + n];
                        match pl.to {
                            Target::Op => {
                                let op = &mut ops[cur.expect("op target resolved")];
                                op.remaining_recv()[..n].copy_from_slice(src);
                                op.advance(n);
                            }
                            Target::Queue => {
                                queue_back(unexpected, pl.tag).data.extend_from_slice(src)
                            }
                            Target::Discard => {}
                        }
                        inb.start += n;
                        pl.got += n;
                        if pl.got == pl.len {
                            finish_payload(inb, unexpected);
                            cur = None;
                        }
                    }
                }
            }
            inb.start = 0;
            inb.end = 0;
            if budget == 0 || (!drain && !wants_input(ops, peer)) {
                return Ok(());
            }

            // Read more: large remainders in place, everything else through the stage.
            let res = match &mut inb.payload {
                Some(pl) if pl.len - pl.got >= DIRECT_MIN && pl.to != Target::Discard => {
                    let want = (pl.len - pl.got).min(budget);
                    let res = match pl.to {
                        Target::Op => {
                            let op = &mut ops[cur.expect("op target resolved")];
                            let r = (&conn.stream).read(&mut op.remaining_recv()[..want]);
                            if let Ok(n) = r {
                                op.advance(n);
                            }
                            r
                        }
                        _ => sys::recv_append(
                            conn.fd,
                            &mut queue_back(unexpected, pl.tag).data,
                            want,
                        ),
                    };
                    if let Ok(n) = res {
                        pl.got += n;
                        if n > 0 && pl.got == pl.len {
                            finish_payload(inb, unexpected);
                            cur = None;
                        }
                    }
                    res
                }
                _ => {
                    let r = (&conn.stream).read(&mut inb.stage);
                    if let Ok(n) = r {
                        inb.end = n;
                    }
                    r
                }
            };
            match res {
                Ok(0) => return Err(PumpError::Lost("connection closed by peer".into())),
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PumpError::Lost(e.to_string())),
            }
        }
    }

    /// Writes frames until the socket is full, nothing is left, or the budget is spent.
    /// Returns whether the kernel refused bytes (the socket is full).
    fn pump_out(&mut self, peer: Rank, ops: &mut [Op<'_>]) -> Result<bool, PumpError> {
        let conn = self.conn.as_mut().expect("pump_out needs a connection");
        let out = &mut conn.out;
        let mut budget = BUDGET;
        while budget > 0 {
            if out.cur.is_none() {
                if let Some(buf) = out.backlog.pop_front() {
                    out.cur = Some(OutFrame::Owned { buf, sent: 0 });
                } else if let Some(i) = ops
                    .iter()
                    .position(|o| o.peer() == peer && o.kind() == OpKind::Send && !o.is_started())
                {
                    let op = &mut ops[i];
                    op.mark_started();
                    let hdr = Header {
                        tag: op.tag(),
                        len: op.len(),
                    }
                    .encode();
                    // A zero-length op is complete once started; its header must not depend
                    // on the op staying around.
                    out.cur = Some(if op.is_empty() {
                        OutFrame::Owned {
                            buf: hdr.to_vec(),
                            sent: 0,
                        }
                    } else {
                        OutFrame::Op {
                            tag: op.tag(),
                            len: op.len(),
                            hdr,
                            sent: 0,
                        }
                    });
                } else {
                    return Ok(false);
                }
            }
            let res = match out.cur.as_mut().expect("frame chosen") {
                OutFrame::Owned { buf, sent } => {
                    send_retrying(conn.fd, &buf[*sent..], &[]).map(|n| {
                        *sent += n;
                        (n, *sent == buf.len())
                    })
                }
                OutFrame::Op {
                    tag,
                    len,
                    hdr,
                    sent,
                } => {
                    let payload_done = sent.saturating_sub(HEADER_LEN);
                    let Some(i) = find_op(ops, peer, OpKind::Send, *tag, *len, payload_done) else {
                        if ops
                            .iter()
                            .any(|o| o.peer() == peer && o.kind() == OpKind::Send)
                        {
                            return Err(PumpError::Lost(format!(
                                "a partly sent message ({tag:?}, {payload_done} of {len} bytes) was abandoned; \
                                 the stream cannot continue"
                            )));
                        }
                        // Not this call's business; the frame resumes when its op is back.
                        return Ok(false);
                    };
                    let op = &mut ops[i];
                    let h = &hdr[(*sent).min(HEADER_LEN)..];
                    let payload = op.remaining_send();
                    let payload = &payload[..payload.len().min(budget)];
                    send_retrying(conn.fd, h, payload).map(|n| {
                        op.advance(n.saturating_sub(h.len()));
                        *sent += n;
                        (n, *sent == HEADER_LEN + *len)
                    })
                }
            };
            match res {
                Ok((n, done)) => {
                    if done {
                        out.cur = None;
                    }
                    budget = budget.saturating_sub(n.max(1));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(PumpError::Lost(e.to_string())),
            }
        }
        Ok(false)
    }
}

/// Whether a receive op of `peer` is still waiting for bytes.
fn wants_input(ops: &[Op<'_>], peer: Rank) -> bool {
    ops.iter()
        .any(|o| o.peer() == peer && o.kind() == OpKind::Recv && !o.is_complete())
}

/// Sends, retrying on EINTR. A successful zero-byte send of a non-empty buffer cannot happen on
/// a stream socket, so it is reported as WouldBlock rather than looping.
fn send_retrying(fd: RawFd, a: &[u8], b: &[u8]) -> io::Result<usize> {
    loop {
        match sys::send2(fd, a, b) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(0) if !(a.is_empty() && b.is_empty()) => {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            r => return r,
        }
    }
}

/// The started, incomplete op of `peer` with this tag, length and progress.
fn find_op(
    ops: &[Op<'_>],
    peer: Rank,
    kind: OpKind,
    tag: Tag,
    len: usize,
    done: usize,
) -> Option<usize> {
    ops.iter().position(|o| {
        o.peer() == peer
            && o.kind() == kind
            && o.tag() == tag
            && o.len() == len
            && o.is_started()
            && !o.is_complete()
            && o.done() == done
    })
}

fn queue_back(unexpected: &mut HashMap<Tag, VecDeque<Queued>>, tag: Tag) -> &mut Queued {
    unexpected
        .get_mut(&tag)
        .and_then(|q| q.back_mut())
        .expect("queue target exists")
}

/// Decides where a freshly decoded message goes.
fn begin_payload(
    inb: &mut Inbound,
    unexpected: &mut HashMap<Tag, VecDeque<Queued>>,
    ops: &mut [Op<'_>],
    peer: Rank,
    h: Header,
    cur: &mut Option<usize>,
) -> Result<(), PumpError> {
    // Same-tag messages must be consumed in order: only go direct when nothing is queued ahead.
    let queue_empty = unexpected.get(&h.tag).is_none_or(VecDeque::is_empty);
    let waiting = if queue_empty {
        ops.iter().position(|o| {
            o.peer() == peer && o.kind() == OpKind::Recv && o.tag() == h.tag && !o.is_started()
        })
    } else {
        None
    };
    match waiting {
        Some(i) if ops[i].len() != h.len => {
            if h.len > 0 {
                inb.payload = Some(InPayload {
                    tag: h.tag,
                    len: h.len,
                    got: 0,
                    to: Target::Discard,
                });
            }
            Err(PumpError::Protocol(length_detail(
                h.tag,
                h.len,
                ops[i].len(),
            )))
        }
        Some(i) => {
            ops[i].mark_started();
            if h.len > 0 {
                inb.payload = Some(InPayload {
                    tag: h.tag,
                    len: h.len,
                    got: 0,
                    to: Target::Op,
                });
                *cur = Some(i);
            }
            Ok(())
        }
        None => {
            unexpected.entry(h.tag).or_default().push_back(Queued {
                data: Vec::with_capacity(h.len.min(1 << 20)),
                len: h.len,
                skipped: 0,
                complete: h.len == 0,
            });
            if h.len > 0 {
                inb.payload = Some(InPayload {
                    tag: h.tag,
                    len: h.len,
                    got: 0,
                    to: Target::Queue,
                });
            }
            Ok(())
        }
    }
}

fn finish_payload(inb: &mut Inbound, unexpected: &mut HashMap<Tag, VecDeque<Queued>>) {
    let pl = inb.payload.take().expect("payload in flight");
    if pl.to == Target::Queue {
        queue_back(unexpected, pl.tag).complete = true;
    }
}

fn length_detail(tag: Tag, got: usize, want: usize) -> String {
    format!("message {tag:?} is {got} bytes, the receive expected {want}")
}

fn length_mismatch(peer: Rank, tag: Tag, got: usize, want: usize) -> TransportError {
    TransportError::Protocol {
        peer,
        detail: length_detail(tag, got, want),
    }
}

fn abandoned(peer: Rank, tag: Tag) -> TransportError {
    TransportError::Protocol {
        peer,
        detail: format!("message {tag:?} was partly delivered to a receive that was abandoned"),
    }
}

#[cfg(test)]
mod tests;
