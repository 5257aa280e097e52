//! [`TcpTransport`]: the progress engine that runs on the caller's thread.
//!
//! How a wait works: it makes one progress round (non-blocking reads and writes on every
//! connection the ops involve). If the ops are not done, it watches the sockets they need
//! (readable always, writable while sends are unfinished) plus the transport's eventfd: for
//! `spin` it busy-polls them with a zero-timeout `ppoll(2)` (hinting the CPU, and yielding every
//! other round so oversubscribed ranks share cores), then sleeps in `ppoll` until one is ready
//! or the deadline passes, and starts over with another progress round. Once, after
//! [`PROBE_AFTER`], it dials the peers it receives from but has no connection to (a dead one
//! refuses). The eventfd is rung by the accept loop when a connection
//! arrives, by [`Waker`]s, and by `abort`, so no sleeper misses those. No lock is held while
//! sleeping.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hora_transport::{Op, OpKind, Rank, Tag, Transport, TransportError, Waker};
use parking_lot::{Condvar, Mutex};

use crate::config::TcpConfig;
use crate::connect::{ensure_connected, spawn_acceptor};
use crate::directory::PeerDirectory;
use crate::peer::PeerState;
use crate::sys::{self, EventFd};

/// Longest single sleep; a safety net should a wake-up ever be consumed by another thread.
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// Spin rounds between `sched_yield`s. Yielding lets an oversubscribed job (more ranks than
/// cores) make progress; measured on a loaded 2-core VM, yielding often also gave the best
/// round trips, and on an idle machine a yield with nothing else runnable costs well under 1 µs.
const YIELD_EVERY: u32 = 2;

/// A wait that expects bytes from a peer it has no connection to dials that peer itself once
/// it has waited this long: a live peer just gets its connection a little earlier, a dead
/// one's refusal fails the wait at once instead of at its deadline (see [`Inner::probe`]).
const PROBE_AFTER: Duration = Duration::from_secs(1);

/// What `recv_msg` returns: a message and its sender, or `None` when woken.
type Received = Option<(Rank, Vec<u8>)>;

/// One peer's slot: its state behind a short-held lock, and a condvar for connection changes.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub(crate) state: Mutex<PeerState>,
    pub(crate) changed: Condvar,
}

/// State shared by the caller's thread, the accept loop and wakers.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) rank: Rank,
    pub(crate) size: usize,
    pub(crate) config: TcpConfig,
    pub(crate) directory: Arc<dyn PeerDirectory>,
    pub(crate) slots: Vec<Slot>,
    pub(crate) bell: EventFd,
    pub(crate) aborted: AtomicBool,
    abort_reason: Mutex<Option<String>>,
    /// The transport is being dropped: the accept loop must not install anything.
    pub(crate) closed: AtomicBool,
    pub(crate) accept_stop: tokio::sync::Notify,
    woken: AtomicBool,
    /// Peers whose connection holds `send_msg` bytes the kernel has not taken yet.
    backlog: AtomicUsize,
    /// Where `recv_msg(None)` starts looking, rotated for fairness.
    next_any: AtomicUsize,
}

impl Inner {
    pub(crate) fn check_aborted(&self) -> Result<(), TransportError> {
        if self.aborted.load(Ordering::Acquire) {
            let reason = self.abort_reason.lock().clone().unwrap_or_default();
            return Err(TransportError::Aborted { reason });
        }
        Ok(())
    }

    fn check_peer(&self, peer: Rank) -> Result<(), TransportError> {
        if peer >= self.size || peer == self.rank {
            return Err(TransportError::InvalidPeer {
                peer,
                size: self.size,
                me: self.rank,
            });
        }
        Ok(())
    }

    /// One non-blocking round over `ops`; dials peers we must send to (bounded by `dial_by`).
    fn progress_round(&self, ops: &mut [Op<'_>], dial_by: Instant) -> Result<bool, TransportError> {
        self.check_aborted()?;
        for op in ops.iter() {
            self.check_peer(op.peer())?;
        }
        for i in 0..ops.len() {
            let peer = ops[i].peer();
            if ops[..i].iter().any(|o| o.peer() == peer) {
                continue;
            }
            let mine = |o: &Op<'_>| o.peer() == peer && !o.is_complete();
            if !ops.iter().any(mine) {
                continue;
            }
            let slot = &self.slots[peer];
            let mut st = slot.state.lock();
            let must_dial = st.conn.is_none()
                && st.lost.is_none()
                && ops.iter().any(|o| mine(o) && o.kind() == OpKind::Send);
            if must_dial {
                drop(st);
                ensure_connected(self, peer, dial_by)?;
                st = slot.state.lock();
            }
            let res = st.progress(peer, ops);
            st.sync_backlog(&self.backlog);
            res?;
        }
        self.flush_backlog(None)?;
        Ok(ops.iter().all(Op::is_complete))
    }

    /// Dials `peer` if no connection to it exists yet, so a wait on a rank that died before
    /// anyone contacted it ends now, naming it (a refused dial is `ConnectionLost`), rather
    /// than at the deadline. A dial that gets no answer at all proves nothing: the wait goes
    /// on until its own deadline, as it would have.
    fn probe(&self, peer: Rank, deadline: Instant) -> Result<(), TransportError> {
        {
            let st = self.slots[peer].state.lock();
            if st.conn.is_some() || st.lost.is_some() {
                return Ok(());
            }
        }
        tracing::debug!(
            rank = self.rank,
            peer,
            "dialing a peer we wait on but never heard from"
        );
        let by = deadline.min(Instant::now() + self.config.connect_timeout);
        match ensure_connected(self, peer, by) {
            Err(TransportError::Timeout { .. }) => Ok(()),
            other => other,
        }
    }

    /// [`Self::probe`]s every peer an unfinished receive of `ops` waits on.
    fn probe_receives(&self, ops: &[Op<'_>], deadline: Instant) -> Result<(), TransportError> {
        for (i, op) in ops.iter().enumerate() {
            let waits = |o: &Op<'_>| o.kind() == OpKind::Recv && !o.is_complete();
            if waits(op) && !ops[..i].iter().any(|o| o.peer() == op.peer() && waits(o)) {
                self.probe(op.peer(), deadline)?;
            }
        }
        Ok(())
    }

    /// Pushes out `send_msg` bytes still waiting on any connection.
    fn flush_backlog(&self, skip: Option<Rank>) -> Result<(), TransportError> {
        if self.backlog.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        for (peer, slot) in self.slots.iter().enumerate() {
            if Some(peer) == skip {
                continue;
            }
            let mut st = slot.state.lock();
            let res = st.flush(peer);
            st.sync_backlog(&self.backlog);
            res?;
        }
        Ok(())
    }

    /// Adds POLLOUT entries for connections with pending `send_msg` bytes not already listed.
    fn poll_backlog(&self, fds: &mut Vec<libc::pollfd>) {
        if self.backlog.load(Ordering::Acquire) == 0 {
            return;
        }
        for slot in &self.slots {
            let st = slot.state.lock();
            if let Some(conn) = st.live()
                && !fds.iter().any(|p| p.fd == conn.fd())
            {
                fds.push(libc::pollfd {
                    fd: conn.fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                });
            }
        }
    }

    /// Waits until a listed fd (or the bell) is ready: first by spinning on a zero-timeout
    /// `ppoll` for `spin`, then by sleeping until `deadline` (capped at [`MAX_SLEEP`]).
    ///
    /// Spinning on readiness rather than on `recv` matters: `recv` takes the socket lock, which
    /// the peer's transmit path needs to deliver into our socket, while `poll` does not.
    fn await_ready(
        &self,
        fds: &mut [libc::pollfd],
        deadline: Instant,
    ) -> Result<(), TransportError> {
        let io = |source| TransportError::Io { peer: None, source };
        let spin_until = Instant::now() + self.config.spin;
        let mut round = 0u32;
        loop {
            if sys::poll(fds, None).map_err(io)? > 0 {
                break;
            }
            let now = Instant::now();
            if now >= spin_until || now >= deadline {
                let left = deadline.saturating_duration_since(now).min(MAX_SLEEP);
                sys::poll(fds, Some(left)).map_err(io)?;
                break;
            }
            round += 1;
            if round.is_multiple_of(YIELD_EVERY) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        if fds[0].revents != 0 {
            self.bell.drain();
        }
        Ok(())
    }

    fn bell_fd(&self) -> libc::pollfd {
        libc::pollfd {
            fd: self.bell.fd(),
            events: libc::POLLIN,
            revents: 0,
        }
    }

    /// One attempt at `recv_msg`: reads what has arrived, then looks for a message.
    fn try_recv_msg(
        &self,
        from: Option<Rank>,
        tag: Tag,
    ) -> Result<Option<Received>, TransportError> {
        self.check_aborted()?;
        let first = match from {
            Some(p) => p,
            None => self.next_any.fetch_add(1, Ordering::Relaxed) % self.size,
        };
        let count = if from.is_some() { 1 } else { self.size };
        for k in 0..count {
            let peer = (first + k) % self.size;
            if peer == self.rank {
                continue;
            }
            let mut st = self.slots[peer].state.lock();
            let res = st.pump_idle(peer);
            st.sync_backlog(&self.backlog);
            res?;
            if let Some(msg) = st.take_message(peer, tag)? {
                return Ok(Some(Some((peer, msg))));
            }
        }
        self.flush_backlog(from)?;
        if self.woken.swap(false, Ordering::AcqRel) {
            return Ok(Some(None));
        }
        // Only after the queues are empty: messages a peer sent before dying are still delivered.
        let lost = |peer: Rank| -> Result<(), TransportError> {
            match &self.slots[peer].state.lock().lost {
                Some(detail) => Err(TransportError::ConnectionLost {
                    peer,
                    detail: detail.clone(),
                }),
                None => Ok(()),
            }
        };
        match from {
            Some(p) => lost(p)?,
            None => (0..self.size)
                .filter(|&p| p != self.rank)
                .try_for_each(lost)?,
        }
        Ok(None)
    }
}

/// One rank's TCP transport. See the crate docs for the design.
#[derive(Debug)]
pub struct TcpTransport {
    inner: Arc<Inner>,
    local_addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl TcpTransport {
    /// Binds a listener on `bind_ip:0`, publishes its address and starts accepting peers in the
    /// background. Connections to peers are made on first use.
    pub fn new(
        config: TcpConfig,
        directory: Arc<dyn PeerDirectory>,
    ) -> Result<Self, TransportError> {
        let (rank, size) = (config.rank, config.size);
        if rank >= size {
            return Err(TransportError::InvalidPeer {
                peer: rank,
                size,
                me: rank,
            });
        }
        let io = |source| TransportError::Io { peer: None, source };
        let listener = TcpListener::bind((config.bind_ip, 0)).map_err(io)?;
        let local_addr = listener.local_addr().map_err(io)?;
        let inner = Arc::new(Inner {
            rank,
            size,
            config,
            directory,
            slots: (0..size).map(|_| Slot::default()).collect(),
            bell: EventFd::new().map_err(io)?,
            aborted: AtomicBool::new(false),
            abort_reason: Mutex::new(None),
            closed: AtomicBool::new(false),
            accept_stop: tokio::sync::Notify::new(),
            woken: AtomicBool::new(false),
            backlog: AtomicUsize::new(0),
            next_any: AtomicUsize::new(0),
        });
        let acceptor = spawn_acceptor(inner.clone(), listener).map_err(io)?;
        let transport = Self {
            inner,
            local_addr,
            acceptor: Some(acceptor),
        };
        transport
            .inner
            .directory
            .publish(rank, local_addr)
            .map_err(|msg| {
                io(std::io::Error::other(format!(
                    "publishing rank {rank}'s address: {msg}"
                )))
            })?;
        Ok(transport)
    }

    /// Connects to `peer` now instead of on first use (waiting for its address until
    /// `deadline`), so a hang-up of `peer` is seen from the start even if nothing was sent yet:
    /// hora's ranks connect to rank 0, the coordinator, during init. Idempotent.
    pub fn connect_to(&self, peer: Rank, deadline: Instant) -> Result<(), TransportError> {
        self.inner.check_peer(peer)?;
        ensure_connected(&self.inner, peer, deadline)
    }

    /// The address this rank listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn timeout(ops: &[Op<'_>], start: Instant) -> TransportError {
        let pending = ops.iter().find(|o| !o.is_complete());
        TransportError::Timeout {
            peer: pending.map(Op::peer),
            after: start.elapsed(),
            what: match pending {
                Some(o) => format!(
                    "{:?} {:?} of {} bytes ({} moved)",
                    o.kind(),
                    o.tag(),
                    o.len(),
                    o.done()
                ),
                None => "operations to complete".into(),
            },
        }
    }
}

impl Transport for TcpTransport {
    fn rank(&self) -> Rank {
        self.inner.rank
    }

    fn size(&self) -> usize {
        self.inner.size
    }

    fn progress(&self, ops: &mut [Op<'_>]) -> Result<bool, TransportError> {
        let dial_by = Instant::now() + self.inner.config.connect_timeout;
        self.inner.progress_round(ops, dial_by)
    }

    fn wait(&self, ops: &mut [Op<'_>], deadline: Instant) -> Result<(), TransportError> {
        let inner = &*self.inner;
        let start = Instant::now();
        let dial_by = deadline.min(start + inner.config.connect_timeout);
        let mut probe_at = Some(start + PROBE_AFTER);
        let mut fds = Vec::new();
        loop {
            if inner.progress_round(ops, dial_by)? {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Self::timeout(ops, start));
            }
            if probe_at.is_some_and(|t| now >= t) {
                probe_at = None;
                inner.probe_receives(ops, deadline)?;
                continue;
            }
            fds.clear();
            fds.push(inner.bell_fd());
            for (i, op) in ops.iter().enumerate() {
                let peer = op.peer();
                let first = !ops[..i].iter().any(|o| o.peer() == peer);
                if !first || !ops.iter().any(|o| o.peer() == peer && !o.is_complete()) {
                    continue;
                }
                let st = inner.slots[peer].state.lock();
                let events = st.poll_events(peer, ops);
                if let Some(conn) = st.live().filter(|_| events != 0) {
                    fds.push(libc::pollfd {
                        fd: conn.fd(),
                        events,
                        revents: 0,
                    });
                }
            }
            inner.poll_backlog(&mut fds);
            inner.await_ready(&mut fds, deadline)?;
        }
    }

    fn send_msg(&self, peer: Rank, tag: Tag, msg: &[u8]) -> Result<(), TransportError> {
        let inner = &*self.inner;
        inner.check_aborted()?;
        inner.check_peer(peer)?;
        let slot = &inner.slots[peer];
        if slot.state.lock().conn.is_none() {
            ensure_connected(inner, peer, Instant::now() + inner.config.connect_timeout)?;
        }
        let mut st = slot.state.lock();
        let res = st.send_message(peer, tag, msg);
        st.sync_backlog(&inner.backlog);
        res
    }

    fn recv_msg(
        &self,
        from: Option<Rank>,
        tag: Tag,
        deadline: Instant,
    ) -> Result<Option<(Rank, Vec<u8>)>, TransportError> {
        let inner = &*self.inner;
        if let Some(p) = from {
            inner.check_peer(p)?;
        }
        let start = Instant::now();
        // Only a wait on one peer probes it; a coordinator listening to everyone relies on
        // the other ranks having connected to it (see `connect_to`).
        let mut probe_at = from.map(|p| (p, start + PROBE_AFTER));
        let mut fds = Vec::new();
        loop {
            if let Some(got) = inner.try_recv_msg(from, tag)? {
                return Ok(got);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(TransportError::Timeout {
                    peer: from,
                    after: start.elapsed(),
                    what: format!("a message with {tag:?}"),
                });
            }
            if let Some((peer, at)) = probe_at
                && now >= at
            {
                probe_at = None;
                inner.probe(peer, deadline)?;
                continue;
            }
            fds.clear();
            fds.push(inner.bell_fd());
            let peers: Box<dyn Iterator<Item = Rank>> = match from {
                Some(p) => Box::new(std::iter::once(p)),
                None => Box::new(0..inner.size),
            };
            for peer in peers.filter(|&p| p != inner.rank) {
                if let Some(conn) = inner.slots[peer].state.lock().live() {
                    fds.push(libc::pollfd {
                        fd: conn.fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                }
            }
            inner.poll_backlog(&mut fds);
            inner.await_ready(&mut fds, deadline)?;
        }
    }

    fn waker(&self) -> Waker {
        let inner = self.inner.clone();
        Waker::new(move || {
            inner.woken.store(true, Ordering::Release);
            inner.bell.ring();
        })
    }

    fn abort(&self, reason: &str) {
        let inner = &*self.inner;
        {
            let mut r = inner.abort_reason.lock();
            if r.is_none() {
                *r = Some(reason.to_string());
            }
        }
        inner.aborted.store(true, Ordering::Release);
        for slot in &inner.slots {
            slot.state.lock().shutdown();
            slot.changed.notify_all();
        }
        inner.accept_stop.notify_one();
        inner.bell.ring();
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.accept_stop.notify_one();
        if let Some(handle) = self.acceptor.take() {
            let _ = handle.join();
        }
        // Close every connection now so peers see the end of the stream, even if a waker or a
        // late handshake still holds the shared state.
        for slot in &self.inner.slots {
            let mut st = slot.state.lock();
            st.shutdown();
            st.conn = None;
            st.lost.get_or_insert_with(|| "transport dropped".into());
        }
    }
}
