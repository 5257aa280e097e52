//! [`MpiTransport`]: hora's `Transport` over MPI point-to-point messages.
//!
//! How it works. A `wait` posts an `MPI_Irecv`/`MPI_Isend` per op straight on the caller's
//! buffers (messages over 1 GiB go as several, in order) and drives them with `MPI_Test`
//! until all are done, checking the deadline, a local abort and abort notices from peers on
//! the way: it yields the core, then sleeps in short naps (MPI gives no file descriptor to
//! sleep on); it never busy-polls (see `backoff`). Before it returns early, every posted
//! request is cancelled and completed, so no request outlives the borrow of its buffer; a send
//! the library cannot cancel within a grace period ends the job with `MPI_Abort` rather than
//! let MPI read freed memory. Control messages (`send_msg`/`recv_msg`) travel on a second communicator, sent
//! from an owned copy (never blocking the sender) and received with `MPI_Improbe` +
//! `MPI_Mrecv`, which is safe with several receiving threads. `abort` sends every peer a
//! notice on a reserved tag, so a peer's waits fail naming this rank; a peer that dies
//! outright is handled by the MPI launcher, which ends the job.
//!
//! Tags: MPI tags are C ints, so a hora tag maps to its kind byte and the low bits of its
//! sequence number (20 bits where the library allows); tags of messages in flight at the same
//! time never differ only in the high sequence bits.

use std::ffi::c_int;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hora_transport::{Op, OpKind, Rank, Tag, Transport, TransportError, Waker};
use mpi::ffi;

use crate::comm::{Comm, check, rbuf, sbuf};
use crate::init::{error_class, error_string, state};

/// Largest single MPI message (counts are C ints).
const CHUNK: usize = 1 << 30;
/// How long an early return waits for cancelled requests before it ends the job.
const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// Stop yielding and start sleeping after this long without progress.
const YIELD_FOR: Duration = Duration::from_millis(2);
/// The nap between polls once a wait sleeps.
const NAP: Duration = Duration::from_micros(50);
/// Longest a dropped transport waits for its peers' goodbyes (see `say_goodbye`).
const GOODBYE_WAIT: Duration = Duration::from_secs(3);
/// The body of a goodbye.
static GOODBYE: [u8; 1] = [0];

/// One rank's MPI transport; see the module docs.
pub struct MpiTransport {
    data: Comm,
    ctrl: Comm,
    coll: Comm,
    seq_bits: u32,
    abort_tag: c_int,
    aborted: Mutex<Option<String>>,
    aborted_flag: AtomicBool,
    peer_failed: Mutex<Option<(Rank, String)>>,
    woken: Arc<AtomicBool>,
    outbox: Mutex<Vec<(ffi::MPI_Request, Box<[u8]>)>>,
}

// SAFETY: MPI runs with MPI_THREAD_MULTIPLE (checked at start-up); the pending control requests
// are only touched under their mutex.
unsafe impl Send for MpiTransport {}
// SAFETY: as above.
unsafe impl Sync for MpiTransport {}

impl fmt::Debug for MpiTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpiTransport")
            .field("rank", &self.data.rank())
            .field("size", &self.data.size())
            .finish_non_exhaustive()
    }
}

struct Posted {
    req: ffi::MPI_Request,
    op: usize,
    len: usize,
    active: bool,
}

fn zeroed_status() -> ffi::MPI_Status {
    // SAFETY: MPI_Status is a plain C struct of integers.
    unsafe { std::mem::zeroed() }
}

impl MpiTransport {
    /// A transport over all of `MPI_COMM_WORLD` (initialising MPI); collective over the world.
    pub fn world() -> Result<Self, TransportError> {
        Self::new(&Comm::world()?)
    }

    /// A transport over the ranks of `comm`, with its own communicators (collective over
    /// `comm`).
    pub fn new(comm: &Comm) -> Result<Self, TransportError> {
        let init = state().map_err(crate::comm::mpi_error)?;
        // kind (8 bits) + seq bits + one bit above for the abort tag must stay below tag_ub.
        let usable = (31 - init.tag_ub.max(32767).leading_zeros()).min(30);
        let seq_bits = usable.saturating_sub(9).clamp(6, 20);
        Ok(Self {
            data: comm.dup()?,
            ctrl: comm.dup()?,
            coll: comm.dup()?,
            seq_bits,
            abort_tag: 1 << (8 + seq_bits),
            aborted: Mutex::new(None),
            aborted_flag: AtomicBool::new(false),
            peer_failed: Mutex::new(None),
            woken: Arc::new(AtomicBool::new(false)),
            outbox: Mutex::new(Vec::new()),
        })
    }

    /// The communicator the native collectives run on (its own context, separate from the
    /// point-to-point traffic).
    pub fn collectives_comm(&self) -> &Comm {
        &self.coll
    }

    fn mpi_tag(&self, tag: Tag) -> c_int {
        let seq = tag.seq() & ((1u64 << self.seq_bits) - 1);
        ((tag.kind() as c_int) << self.seq_bits) | seq as c_int
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

    fn check_alive(&self) -> Result<(), TransportError> {
        if self.aborted_flag.load(Ordering::Acquire) {
            let reason = self
                .aborted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            return Err(TransportError::Aborted {
                reason: reason.unwrap_or_default(),
            });
        }
        if let Some((peer, detail)) = self
            .peer_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(TransportError::ConnectionLost { peer, detail });
        }
        Ok(())
    }

    /// Takes in abort notices from peers, recording the first.
    fn poll_notices(&self) {
        loop {
            // An MPI error here surfaces in the caller's next receive or wait.
            let Ok(Some((src, body))) = self.try_take(None, self.abort_tag) else {
                return;
            };
            let mut failed = self.peer_failed.lock().unwrap_or_else(|e| e.into_inner());
            if failed.is_none() {
                *failed = Some((
                    src,
                    format!("rank {src} aborted: {}", String::from_utf8_lossy(&body)),
                ));
            }
        }
    }

    /// Receives one waiting control message with `tag` (from `from` or anyone), if there is
    /// one.
    fn try_take(
        &self,
        from: Option<Rank>,
        tag: c_int,
    ) -> Result<Option<(Rank, Vec<u8>)>, TransportError> {
        Ok(self.take(from, tag)?.map(|(src, _, body)| (src, body)))
    }

    /// `try_take`, also giving the message's tag (for `MPI_ANY_TAG`).
    fn take(
        &self,
        from: Option<Rank>,
        tag: c_int,
    ) -> Result<Option<(Rank, c_int, Vec<u8>)>, TransportError> {
        let src = match from {
            Some(p) => p as c_int,
            // SAFETY: reading a link-time constant.
            None => unsafe { ffi::RSMPI_ANY_SOURCE },
        };
        let mut flag: c_int = 0;
        let mut msg = std::mem::MaybeUninit::<ffi::MPI_Message>::uninit();
        let mut status = zeroed_status();
        // SAFETY: valid communicator; out-parameters.
        let rc = unsafe {
            ffi::MPI_Improbe(
                src,
                tag,
                self.ctrl.raw(),
                &mut flag,
                msg.as_mut_ptr(),
                &mut status,
            )
        };
        check(rc, "MPI_Improbe")?;
        if flag == 0 {
            return Ok(None);
        }
        // SAFETY: the MPI call above succeeded, so it wrote this handle (or value).
        let mut msg = unsafe { msg.assume_init() };
        let mut n: c_int = 0;
        // SAFETY: status was filled by the probe.
        unsafe { ffi::MPI_Get_count(&status, ffi::RSMPI_UINT8_T, &mut n) };
        let mut body = vec![0u8; n.max(0) as usize];
        let mut st = zeroed_status();
        // SAFETY: the matched message is exactly `n` bytes; `body` holds them.
        let rc =
            unsafe { ffi::MPI_Mrecv(rbuf(&mut body), n, ffi::RSMPI_UINT8_T, &mut msg, &mut st) };
        check(rc, "MPI_Mrecv")?;
        Ok(Some((status.MPI_SOURCE as Rank, status.MPI_TAG, body)))
    }

    /// Before the transport goes, takes in every control message still on its way here, so
    /// none is left unmatched at `MPI_Finalize` (erroneous in MPI; MPICH over UCX warns
    /// "unexpected tag-receive descriptor ... was not matched"). The usual one: a worker's
    /// shutdown request reaching rank 0 after rank 0 broadcast the shutdown plan and stopped
    /// listening.
    ///
    /// How: every rank sends each peer a goodbye on the control communicator, then receives
    /// (and drops) whatever arrives there until each peer's goodbye or abort notice is in
    /// (an aborted peer's notice stands for its goodbye). Messages from one rank to another
    /// on one communicator do not overtake each other, so nothing sent before a goodbye is
    /// left behind. A transport that aborted sent its notices instead and skips all this;
    /// the wait is bounded by `GOODBYE_WAIT` for a peer that keeps its transport longer.
    fn say_goodbye(&self) {
        if self.size() < 2 || self.aborted_flag.load(Ordering::Acquire) {
            return;
        }
        let failed = self
            .peer_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(p, _)| *p);
        let mut finalized: c_int = 0;
        // SAFETY: may be called at any time.
        unsafe { ffi::MPI_Finalized(&mut finalized) };
        if finalized != 0 {
            return;
        }
        let goodbye_tag = self.abort_tag + 1;
        let me = self.rank();
        let mut sent = Vec::new();
        for peer in (0..self.size()).filter(|&p| p != me && Some(p) != failed) {
            let mut req = std::mem::MaybeUninit::<ffi::MPI_Request>::uninit();
            // SAFETY: a static buffer; out-parameter.
            let rc = unsafe {
                ffi::MPI_Isend(
                    sbuf(&GOODBYE),
                    1,
                    ffi::RSMPI_UINT8_T,
                    peer as c_int,
                    goodbye_tag,
                    self.ctrl.raw(),
                    req.as_mut_ptr(),
                )
            };
            if rc != ffi::MPI_SUCCESS as c_int {
                return;
            }
            // SAFETY: the MPI call above succeeded, so it wrote this handle.
            sent.push(unsafe { req.assume_init() });
        }
        let mut waiting: Vec<bool> = (0..self.size())
            .map(|p| p != me && Some(p) != failed)
            .collect();
        let mut left = waiting.iter().filter(|w| **w).count();
        let start = Instant::now();
        let mut last_progress = start;
        // SAFETY: reading a link-time constant.
        let any_tag = unsafe { ffi::RSMPI_ANY_TAG };
        while left > 0 && start.elapsed() < GOODBYE_WAIT {
            match self.take(None, any_tag) {
                Ok(Some((src, tag, _))) => {
                    last_progress = Instant::now();
                    if (tag == goodbye_tag || tag == self.abort_tag)
                        && std::mem::take(&mut waiting[src])
                    {
                        left -= 1;
                    }
                }
                Ok(None) => backoff(last_progress.elapsed()),
                Err(_) => break,
            }
        }
        // The goodbyes leave from a static buffer, so an unfinished one can be let go.
        for mut req in sent {
            let mut flag: c_int = 0;
            let mut st = zeroed_status();
            // SAFETY: an active request of ours; freeing it does not cancel the send.
            unsafe {
                if ffi::MPI_Test(&mut req, &mut flag, &mut st) != ffi::MPI_SUCCESS as c_int
                    || flag == 0
                {
                    ffi::MPI_Request_free(&mut req);
                }
            }
        }
    }

    /// Frees the buffers of control messages that have left.
    fn reap_outbox(&self) {
        let mut out = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        out.retain_mut(|(req, _)| {
            let mut flag: c_int = 0;
            let mut st = zeroed_status();
            // SAFETY: an active request of ours.
            let rc = unsafe { ffi::MPI_Test(req, &mut flag, &mut st) };
            rc == ffi::MPI_SUCCESS as c_int && flag == 0
        });
    }

    /// Cancels and completes every active request, so none outlives its buffer.
    fn cancel_all(&self, posted: &mut [Posted]) {
        for p in posted.iter_mut().filter(|p| p.active) {
            // SAFETY: an active request of ours.
            unsafe { ffi::MPI_Cancel(&mut p.req) };
        }
        let until = Instant::now() + CANCEL_GRACE;
        loop {
            let mut left = false;
            for p in posted.iter_mut().filter(|p| p.active) {
                let mut flag: c_int = 0;
                let mut st = zeroed_status();
                // SAFETY: an active request of ours.
                let rc = unsafe { ffi::MPI_Test(&mut p.req, &mut flag, &mut st) };
                if rc != ffi::MPI_SUCCESS as c_int || flag != 0 {
                    p.active = false;
                } else {
                    left = true;
                }
            }
            if !left {
                return;
            }
            if Instant::now() > until {
                eprintln!(
                    "hora-mpi rank {}: a send could not be cancelled after its wait failed; \
                     ending the job so MPI never reads a buffer its owner has freed",
                    self.rank()
                );
                // SAFETY: ends every process of the job.
                unsafe { ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, 70) };
                std::process::abort();
            }
            std::thread::yield_now();
        }
    }

    fn post(&self, ops: &mut [Op<'_>], posted: &mut Vec<Posted>) -> Result<(), TransportError> {
        // Receives first, so a peer's matching send finds them posted.
        for want in [OpKind::Recv, OpKind::Send] {
            for (i, op) in ops.iter_mut().enumerate() {
                if op.is_complete() || op.kind() != want {
                    continue;
                }
                let peer = op.peer() as c_int;
                let tag = self.mpi_tag(op.tag());
                let len = op.len();
                let mut at = 0;
                loop {
                    let n = (len - at).min(CHUNK);
                    let mut req = std::mem::MaybeUninit::<ffi::MPI_Request>::uninit();
                    // SAFETY: the buffer range [at, at + n) lies in the op's buffer, which
                    // stays borrowed until every request posted here is complete (waits
                    // cancel and complete them before returning).
                    let rc = unsafe {
                        match want {
                            OpKind::Recv => ffi::MPI_Irecv(
                                rbuf(&mut op.remaining_recv()[at..]),
                                n as c_int,
                                ffi::RSMPI_UINT8_T,
                                peer,
                                tag,
                                self.data.raw(),
                                req.as_mut_ptr(),
                            ),
                            OpKind::Send => ffi::MPI_Isend(
                                sbuf(&op.remaining_send()[at..]),
                                n as c_int,
                                ffi::RSMPI_UINT8_T,
                                peer,
                                tag,
                                self.data.raw(),
                                req.as_mut_ptr(),
                            ),
                        }
                    };
                    if rc != ffi::MPI_SUCCESS as c_int {
                        return Err(TransportError::ConnectionLost {
                            peer: op.peer(),
                            detail: format!("posting a message failed: {}", error_string(rc)),
                        });
                    }
                    posted.push(Posted {
                        // SAFETY: the MPI call above succeeded, so it wrote this handle (or value).
                        req: unsafe { req.assume_init() },
                        op: i,
                        len: n,
                        active: true,
                    });
                    at += n;
                    if at >= len {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn wait_posted(
        &self,
        ops: &mut [Op<'_>],
        posted: &mut [Posted],
        deadline: Instant,
    ) -> Result<(), TransportError> {
        let mut chunks_left = vec![0usize; ops.len()];
        for p in posted.iter() {
            chunks_left[p.op] += 1;
        }
        let start = Instant::now();
        let mut last_progress = start;
        let mut iter: u64 = 0;
        loop {
            let mut active = 0;
            for p in posted.iter_mut().filter(|p| p.active) {
                let mut flag: c_int = 0;
                let mut st = zeroed_status();
                // SAFETY: an active request of ours.
                let rc = unsafe { ffi::MPI_Test(&mut p.req, &mut flag, &mut st) };
                let op = &mut ops[p.op];
                if rc != ffi::MPI_SUCCESS as c_int {
                    p.active = false;
                    let code = if st.MPI_ERROR != 0 { st.MPI_ERROR } else { rc };
                    return Err(
                        if op.kind() == OpKind::Recv
                            && error_class(code) == ffi::MPI_ERR_TRUNCATE as c_int
                        {
                            TransportError::Protocol {
                                peer: op.peer(),
                                detail: format!(
                                    "message {:?} is longer than the {} bytes the receive expected",
                                    op.tag(),
                                    op.len()
                                ),
                            }
                        } else {
                            TransportError::ConnectionLost {
                                peer: op.peer(),
                                detail: error_string(code),
                            }
                        },
                    );
                }
                if flag == 0 {
                    active += 1;
                    continue;
                }
                p.active = false;
                last_progress = Instant::now();
                if op.kind() == OpKind::Recv {
                    let mut n: c_int = 0;
                    // SAFETY: status of a completed receive.
                    unsafe { ffi::MPI_Get_count(&st, ffi::RSMPI_UINT8_T, &mut n) };
                    if n as usize != p.len {
                        return Err(TransportError::Protocol {
                            peer: op.peer(),
                            detail: format!(
                                "message {:?} is {n} bytes where the receive expected {}",
                                op.tag(),
                                p.len
                            ),
                        });
                    }
                }
                chunks_left[p.op] -= 1;
                if chunks_left[p.op] == 0 {
                    let len = op.len();
                    op.mark_started();
                    op.advance(len - op.done());
                }
            }
            if active == 0 {
                return Ok(());
            }
            self.check_alive()?;
            iter += 1;
            let now = Instant::now();
            if iter.is_multiple_of(64) {
                self.poll_notices();
                self.check_alive()?;
            }
            if now >= deadline {
                let waiting = posted
                    .iter()
                    .filter(|p| p.active)
                    .map(|p| ops[p.op].peer())
                    .min();
                return Err(TransportError::Timeout {
                    peer: waiting,
                    after: now - start,
                    what: format!(
                        "{active} MPI message(s) to or from rank(s) {:?}",
                        posted
                            .iter()
                            .filter(|p| p.active)
                            .map(|p| ops[p.op].peer())
                            .collect::<std::collections::BTreeSet<_>>()
                    ),
                });
            }
            backoff(now - last_progress);
        }
    }
}

/// Yield the core, then nap: MPI offers nothing to sleep on. No busy-polling, whatever
/// `HORA_SPIN_US` says (its 50 µs default suits TCP and shared memory): a spinning rank starves
/// its peer and the MPI library's own progress on a loaded host (4 KiB through the engine:
/// 25 ms with 50 µs of spin, 15 µs without).
fn backoff(idle: Duration) {
    if idle < YIELD_FOR {
        std::thread::yield_now();
    } else {
        std::thread::sleep(NAP);
    }
}

impl Transport for MpiTransport {
    fn rank(&self) -> Rank {
        self.data.rank()
    }

    fn size(&self) -> usize {
        self.data.size()
    }

    fn progress(&self, ops: &mut [Op<'_>]) -> Result<bool, TransportError> {
        // Only receives whose message has already arrived move here: a request left posted
        // when this returns would outlive the caller's borrow of its buffer.
        self.check_alive()?;
        let mut all = true;
        for op in ops.iter_mut() {
            if op.is_complete() {
                continue;
            }
            self.check_peer(op.peer())?;
            if op.kind() != OpKind::Recv || op.len() > CHUNK {
                all = false;
                continue;
            }
            let mut flag: c_int = 0;
            let mut msg = std::mem::MaybeUninit::<ffi::MPI_Message>::uninit();
            let mut status = zeroed_status();
            // SAFETY: valid communicator; out-parameters.
            let rc = unsafe {
                ffi::MPI_Improbe(
                    op.peer() as c_int,
                    self.mpi_tag(op.tag()),
                    self.data.raw(),
                    &mut flag,
                    msg.as_mut_ptr(),
                    &mut status,
                )
            };
            check(rc, "MPI_Improbe")?;
            if flag == 0 {
                all = false;
                continue;
            }
            // SAFETY: the MPI call above succeeded, so it wrote this handle (or value).
            let mut msg = unsafe { msg.assume_init() };
            let mut n: c_int = 0;
            // SAFETY: status filled by the probe.
            unsafe { ffi::MPI_Get_count(&status, ffi::RSMPI_UINT8_T, &mut n) };
            let mut st = zeroed_status();
            if n as usize != op.len() {
                // Take the message off the queue so it cannot match a later receive.
                let mut sink = vec![0u8; n.max(0) as usize];
                // SAFETY: `sink` holds the whole matched message.
                unsafe {
                    ffi::MPI_Mrecv(rbuf(&mut sink), n, ffi::RSMPI_UINT8_T, &mut msg, &mut st)
                };
                return Err(TransportError::Protocol {
                    peer: op.peer(),
                    detail: format!(
                        "message {:?} is {n} bytes where the receive expected {}",
                        op.tag(),
                        op.len()
                    ),
                });
            }
            // SAFETY: the op's buffer is exactly the matched message's length; Mrecv is
            // blocking, so nothing is left in flight.
            let rc = unsafe {
                ffi::MPI_Mrecv(
                    rbuf(op.remaining_recv()),
                    n,
                    ffi::RSMPI_UINT8_T,
                    &mut msg,
                    &mut st,
                )
            };
            if rc != ffi::MPI_SUCCESS as c_int {
                return Err(TransportError::ConnectionLost {
                    peer: op.peer(),
                    detail: error_string(rc),
                });
            }
            let len = op.len();
            op.mark_started();
            op.advance(len);
        }
        Ok(all)
    }

    fn wait(&self, ops: &mut [Op<'_>], deadline: Instant) -> Result<(), TransportError> {
        self.check_alive()?;
        for op in ops.iter() {
            if !op.is_complete() {
                self.check_peer(op.peer())?;
            }
        }
        let mut posted = Vec::with_capacity(ops.len());
        let r = self
            .post(ops, &mut posted)
            .and_then(|()| self.wait_posted(ops, &mut posted, deadline));
        if r.is_err() {
            self.cancel_all(&mut posted);
        }
        r
    }

    fn send_msg(&self, peer: Rank, tag: Tag, msg: &[u8]) -> Result<(), TransportError> {
        self.check_alive()?;
        self.check_peer(peer)?;
        let n = c_int::try_from(msg.len()).map_err(|_| TransportError::Protocol {
            peer,
            detail: format!("control message of {} bytes is over 2 GiB", msg.len()),
        })?;
        self.reap_outbox();
        let body: Box<[u8]> = msg.into();
        let mut req = std::mem::MaybeUninit::<ffi::MPI_Request>::uninit();
        // SAFETY: `body` is owned by the outbox until the request completes (boxed, so it does
        // not move when the outbox grows).
        let rc = unsafe {
            ffi::MPI_Isend(
                sbuf(&body),
                n,
                ffi::RSMPI_UINT8_T,
                peer as c_int,
                self.mpi_tag(tag),
                self.ctrl.raw(),
                req.as_mut_ptr(),
            )
        };
        if rc != ffi::MPI_SUCCESS as c_int {
            return Err(TransportError::ConnectionLost {
                peer,
                detail: format!("sending a control message failed: {}", error_string(rc)),
            });
        }
        self.outbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            // SAFETY: the MPI call above succeeded, so it wrote this handle (or value).
            .push((unsafe { req.assume_init() }, body));
        Ok(())
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
        let mut last_poll = start;
        let mpi_tag = self.mpi_tag(tag);
        let mut first = true;
        loop {
            self.check_alive()?;
            if let Some(got) = self.try_take(from, mpi_tag)? {
                return Ok(Some(got));
            }
            if self.woken.swap(false, Ordering::AcqRel) {
                return Ok(None);
            }
            let now = Instant::now();
            if first || now - last_poll > Duration::from_micros(200) {
                first = false;
                last_poll = now;
                self.poll_notices();
                self.reap_outbox();
            }
            if now >= deadline {
                return Err(TransportError::Timeout {
                    peer: from,
                    after: now - start,
                    what: format!("a control message {tag:?}"),
                });
            }
            backoff(now - start);
        }
    }

    fn waker(&self) -> Waker {
        let woken = self.woken.clone();
        Waker::new(move || woken.store(true, Ordering::Release))
    }

    fn abort(&self, reason: &str) {
        {
            let mut a = self.aborted.lock().unwrap_or_else(|e| e.into_inner());
            if a.is_some() {
                return;
            }
            *a = Some(reason.to_string());
        }
        self.aborted_flag.store(true, Ordering::Release);
        crate::init::mark_aborted();
        // Tell every peer, so their waits fail naming this rank instead of timing out. The
        // notice buffer is leaked: the request is freed without waiting for it.
        let body: &'static [u8] = Box::leak(reason.as_bytes().to_vec().into_boxed_slice());
        for peer in (0..self.size()).filter(|&p| p != self.rank()) {
            let mut req = std::mem::MaybeUninit::<ffi::MPI_Request>::uninit();
            // SAFETY: `body` lives forever; the request is released at once.
            unsafe {
                if ffi::MPI_Isend(
                    sbuf(body),
                    body.len() as c_int,
                    ffi::RSMPI_UINT8_T,
                    peer as c_int,
                    self.abort_tag,
                    self.ctrl.raw(),
                    req.as_mut_ptr(),
                ) == ffi::MPI_SUCCESS as c_int
                {
                    let mut req = req.assume_init();
                    ffi::MPI_Request_free(&mut req);
                }
            }
        }
        self.woken.store(true, Ordering::Release);
    }
}

impl Drop for MpiTransport {
    fn drop(&mut self) {
        self.say_goodbye();
        // Give queued control messages a moment to leave; their buffers are freed with us.
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            self.reap_outbox();
            let left = self.outbox.lock().unwrap_or_else(|e| e.into_inner()).len();
            if left == 0 {
                return;
            }
            if Instant::now() > until {
                // Leak them rather than free memory MPI may still read.
                std::mem::forget(std::mem::take(
                    &mut *self.outbox.lock().unwrap_or_else(|e| e.into_inner()),
                ));
                return;
            }
            std::thread::yield_now();
        }
    }
}
