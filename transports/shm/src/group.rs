//! A group of same-host ranks that have mapped each other's segments.
//!
//! How it is set up. Every rank creates one anonymous segment (a memfd: it has no name in
//! any file system) and maps it. Ranks then meet over abstract unix sockets (named
//! `<job>/<rank>` in the abstract namespace, so no socket file exists either): each rank
//! connects to every lower rank, checks that the peer runs as the same user, and the two swap
//! segment descriptors with SCM_RIGHTS. Each rank maps every peer's segment, closes the
//! descriptors and the listener. From then on the only kernel objects are the mappings (freed
//! when the last process holding one exits, however it exits, `kill -9` included) and one
//! connected socket per pair, which carries nothing: it exists so that a peer's death shows
//! up as a hang-up within one poll.
//!
//! Layout of a segment: a 4 KiB header of counters, each on its own cache line, then
//! `depth × size` slices of `slice_bytes` (see `allreduce.rs` for what goes where).
//!
//! Waiting: a rank spins on a peer's counter for a short while (at most `spin`, less while
//! recent spins were wasted: `AdaptiveSpin`), then sleeps on the peer's doorbell futex, which
//! the peer rings after every counter update (with a syscall only when somebody sleeps). While
//! sleeping it wakes every few milliseconds to poll the peers' sockets, so a dead peer fails the
//! wait quickly and a deadline is never missed by much. With more ranks than cores the spin
//! phase is dropped and a few yields come before the sleep, so waiting ranks give their core to
//! the ranks they wait for.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hora_transport::{AdaptiveSpin, Rank, TransportError};
use parking::Mutex;

use crate::sys;
use setup::{Layout, Meeting, Peers, create_segment, effective_spin, map_peers};

mod setup;

/// A tiny mutex over `std::sync::Mutex` that ignores poisoning (a panicking collective leaves
/// no half-updated state behind that a later call could misread).
mod parking {
    /// See the module docs.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Self {
            Self(std::sync::Mutex::new(v))
        }

        pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// Settings of one shared-memory group; every rank must use the same values.
#[derive(Debug, Clone)]
pub struct ShmConfig {
    /// This rank, `0..size`.
    pub rank: Rank,
    /// Number of ranks in the group.
    pub size: usize,
    /// A name unique to this job (and to this init within the job), the same on every rank.
    pub job: String,
    /// How long set-up may wait for the other ranks.
    pub connect_timeout: Duration,
    /// Bytes one rank handles per pipeline step and per peer (rounded up to 64).
    pub slice_bytes: usize,
    /// Pipeline steps in flight (slots per segment).
    pub depth: usize,
    /// Busy-poll at most this long before sleeping (ignored when oversubscribed); the budget
    /// adapts to how often spinning pays off.
    pub spin: Duration,
    /// Bytes of each point-to-point ring (one per ordered pair; 0 = collectives only).
    pub ring_bytes: usize,
}

impl ShmConfig {
    /// Defaults for `size` ranks: slices sized for the caches of one core, 4 steps in flight.
    pub fn new(rank: Rank, size: usize, job: impl Into<String>) -> Self {
        Self {
            rank,
            size,
            job: job.into(),
            connect_timeout: Duration::from_secs(30),
            slice_bytes: 128 << 10,
            depth: 4,
            spin: Duration::from_micros(50),
            ring_bytes: 0,
        }
    }
}

/// Counters of one rank, each on its own cache line so spinning readers of one do not slow
/// down writers of another.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct Line<T>(pub(crate) T);

/// The header at the start of every segment. Only atomics: any bit pattern (including the
/// zeroes of a fresh memfd) is a valid value, and other processes update it concurrently.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Header {
    magic: Line<AtomicU64>,
    /// (size, slice_bytes, depth) packed as written by the owner, checked by peers.
    shape: Line<[AtomicU64; 4]>,
    /// Steps whose inputs this rank has placed in its slots.
    posted: Line<AtomicU64>,
    /// Steps whose own part this rank has reduced into its slot.
    reduced: Line<AtomicU64>,
    /// Steps this rank has finished reading from its peers' slots.
    copied: Line<AtomicU64>,
    /// Bumped after every counter update; sleepers wait on it.
    doorbell: Line<AtomicU32>,
    /// How many threads (of any process) sleep on `doorbell`.
    sleepers: Line<AtomicU32>,
    /// Set once the owner aborted.
    aborted: Line<AtomicU32>,
    /// Rung by any rank that gives this rank point-to-point work (data or ring space).
    pub(crate) inbox: Line<AtomicU32>,
    /// Threads sleeping on `inbox`.
    pub(crate) inbox_sleepers: Line<AtomicU32>,
}

/// Point-to-point counters of one rank about one peer `p`, after the slots.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct PairLines {
    /// Bytes this rank has written into its ring for `p` (monotonic).
    pub(crate) sent: Line<AtomicU64>,
    /// Bytes this rank has read from `p`'s ring for it (monotonic).
    pub(crate) consumed: Line<AtomicU64>,
}

const MAGIC: u64 = 0x686f_7261_7368_6d31; // "horashm1"
const HEADER_BYTES: usize = 4096;
const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_BYTES);

/// Which counter of a header.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Posted,
    Reduced,
    Copied,
}

impl Header {
    fn counter(&self, c: Counter) -> &AtomicU64 {
        match c {
            Counter::Posted => &self.posted.0,
            Counter::Reduced => &self.reduced.0,
            Counter::Copied => &self.copied.0,
        }
    }
}

/// Same-host ranks with every segment mapped; see the module docs.
#[derive(Debug)]
pub struct ShmGroup {
    rank: Rank,
    size: usize,
    slice: usize,
    depth: usize,
    ring: usize,
    /// `cfg.spin`, or zero when oversubscribed.
    spin: Duration,
    oversubscribed: bool,
    /// Spin budget of collective steps.
    step_spin: AdaptiveSpin,
    /// `maps[p]` is rank p's segment as mapped here (ours included).
    maps: Vec<sys::Mapping>,
    /// `socks[p]`: the connection to rank p (None for ourselves); it only signals hang-ups.
    socks: Vec<Option<UnixStream>>,
    /// The next pipeline step number (all ranks advance it identically); holding the lock
    /// also keeps collectives of this rank from overlapping.
    pub(crate) step: Mutex<u64>,
    aborted: AtomicBool,
    abort_reason: Mutex<Option<String>>,
}

fn io_err(detail: impl std::fmt::Display, peer: Option<Rank>) -> TransportError {
    TransportError::Io {
        peer,
        source: io::Error::other(detail.to_string()),
    }
}

impl ShmGroup {
    /// Creates this rank's segment, meets the other ranks and maps theirs. Every rank of the
    /// group must call it with the same `job`, `size`, `slice_bytes` and `depth`.
    pub fn connect(cfg: &ShmConfig) -> Result<Self, TransportError> {
        let layout = Layout::of(cfg)?;
        let (fd, own) = create_segment(&layout)?;
        let meeting = Meeting {
            cfg,
            layout: &layout,
            deadline: hora_transport::deadline_after(cfg.connect_timeout),
        };
        let listener = meeting.listen()?;
        let mut peers = Peers::new(layout.size);
        meeting.dial_lower(&fd, &mut peers)?;
        if let Some(l) = &listener {
            meeting.accept_higher(l, &fd, &mut peers)?;
        }
        drop(listener);
        let maps = map_peers(&layout, peers.fds, own)?;
        let (spin, oversubscribed) = effective_spin(layout.size, cfg.spin);
        for s in peers.socks.iter().flatten() {
            // Reads only ever happen in `hung_up`, which polls first; never block on them.
            let _ = s.set_read_timeout(None);
        }
        Ok(Self {
            rank: layout.rank,
            size: layout.size,
            slice: layout.slice,
            depth: layout.depth,
            ring: layout.ring,
            spin,
            oversubscribed,
            step_spin: AdaptiveSpin::new(spin),
            maps,
            socks: peers.socks,
            step: Mutex::new(0),
            aborted: AtomicBool::new(false),
            abort_reason: Mutex::new(None),
        })
    }

    /// This rank.
    pub fn rank(&self) -> Rank {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Bytes per slice (one rank's part of one pipeline step).
    pub fn slice_bytes(&self) -> usize {
        self.slice
    }

    /// Pipeline depth.
    pub(crate) fn depth(&self) -> usize {
        self.depth
    }

    /// The most a wait busy-polls before sleeping (zero when oversubscribed).
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// Whether ranks outnumber cores (waits then yield at once instead of spinning).
    pub fn oversubscribed(&self) -> bool {
        self.oversubscribed
    }

    pub(crate) fn header(&self, p: Rank) -> &Header {
        // SAFETY: every mapping is at least HEADER_BYTES long and page aligned; Header holds
        // only atomics, valid for any bytes and safe to share with concurrent writers.
        unsafe { &*self.maps[p].ptr().cast::<Header>() }
    }

    /// The first byte of slot `(d, c)` in rank `p`'s segment: `slice_bytes` bytes, 64-aligned.
    pub(crate) fn slot(&self, p: Rank, d: usize, c: usize) -> *mut u8 {
        debug_assert!(d < self.depth && c < self.size);
        let off = HEADER_BYTES + (d * self.size + c) * self.slice;
        debug_assert!(off + self.slice <= self.maps[p].len());
        // SAFETY: `off + slice` is within the mapping (the segment holds depth × size slices).
        unsafe { self.maps[p].ptr().add(off) }
    }

    /// Bytes of each point-to-point ring.
    pub(crate) fn ring_bytes(&self) -> usize {
        self.ring
    }

    /// Rank `p`'s point-to-point counters about peer `q`.
    pub(crate) fn pair(&self, p: Rank, q: Rank) -> &PairLines {
        let off = HEADER_BYTES
            + self.depth * self.size * self.slice
            + q * std::mem::size_of::<PairLines>();
        // SAFETY: the segment holds `size` PairLines after the slots, 64-aligned (every part
        // before them is a multiple of 64 bytes); they hold only atomics.
        unsafe { &*self.maps[p].ptr().add(off).cast::<PairLines>() }
    }

    /// The first byte of rank `p`'s ring for peer `q` (`ring_bytes` long).
    pub(crate) fn ring(&self, p: Rank, q: Rank) -> *mut u8 {
        let off = HEADER_BYTES
            + self.depth * self.size * self.slice
            + self.size * std::mem::size_of::<PairLines>()
            + q * self.ring;
        debug_assert!(off + self.ring <= self.maps[p].len());
        // SAFETY: within the mapping by the segment layout computed in `connect`.
        unsafe { self.maps[p].ptr().add(off) }
    }

    /// Rings rank `p`'s inbox bell (waking it if it sleeps on it).
    pub(crate) fn ring_inbox(&self, p: Rank) {
        let h = self.header(p);
        h.inbox.0.fetch_add(1, Ordering::SeqCst);
        if h.inbox_sleepers.0.load(Ordering::SeqCst) > 0 {
            sys::futex_wake_all(&h.inbox.0);
        }
    }

    /// Sleeps on our own inbox bell unless `ready()` already holds, at most `timeout`.
    pub(crate) fn sleep_on_inbox(&self, ready: &dyn Fn() -> bool, timeout: Duration) {
        // With more ranks than cores the sender is likely runnable on our core: a few yields
        // let it run and usually beat a futex sleep and wake-up (np=4 on 2 cores, 4 KiB
        // allreduce through the engine: 183 us with no yields, 94 us with 4, same session).
        if self.oversubscribed {
            for _ in 0..4 {
                sys::yield_now();
                if ready() {
                    return;
                }
            }
        }
        let h = self.header(self.rank);
        h.inbox_sleepers.0.fetch_add(1, Ordering::SeqCst);
        let bell = h.inbox.0.load(Ordering::SeqCst);
        if !ready() {
            sys::futex_wait(&h.inbox.0, bell, timeout);
        }
        h.inbox_sleepers.0.fetch_sub(1, Ordering::SeqCst);
    }

    /// The inbox bell's current value (changes whenever someone rings it).
    pub(crate) fn inbox_value(&self) -> u32 {
        self.header(self.rank).inbox.0.load(Ordering::SeqCst)
    }

    /// Publishes a new value of one of our counters and wakes peers sleeping on us.
    pub(crate) fn publish(&self, c: Counter, value: u64) {
        let h = self.header(self.rank);
        h.counter(c).store(value, Ordering::Release);
        h.doorbell.0.fetch_add(1, Ordering::SeqCst);
        if h.sleepers.0.load(Ordering::SeqCst) > 0 {
            sys::futex_wake_all(&h.doorbell.0);
        }
    }

    /// Fails if this rank aborted, or a peer aborted or died. A failure is reported against
    /// the rank that started it: a peer that hung up without flagging an abort died itself;
    /// a peer that flagged one names the rank whose failure made it give up.
    pub(crate) fn check_health(&self, waiting_on: Rank) -> Result<(), TransportError> {
        self.check_not_aborted()?;
        let socks: Vec<(Rank, &UnixStream)> = self
            .socks
            .iter()
            .enumerate()
            .filter_map(|(p, s)| s.as_ref().map(|s| (p, s)))
            .collect();
        let refs: Vec<&UnixStream> = socks.iter().map(|(_, s)| *s).collect();
        let hung = sys::hung_up(&refs).map_err(|e| io_err(format!("poll: {e}"), None))?;
        let mut hung: Vec<Rank> = hung.into_iter().map(|i| socks[i].0).collect();
        hung.sort_by_key(|&p| p != waiting_on);
        let flag = |p: Rank| self.header(p).aborted.0.load(Ordering::Acquire);
        if let Some(&p) = hung.iter().find(|&&p| flag(p) == 0) {
            return Err(TransportError::ConnectionLost {
                peer: p,
                detail: "the peer process exited (its shared-memory socket hung up)".into(),
            });
        }
        let order = std::iter::once(waiting_on).chain((0..self.size).filter(|&p| p != waiting_on));
        for p in order.filter(|&p| p != self.rank && p < self.size) {
            let f = flag(p);
            if f != 0 {
                let culprit = (f - 1) as Rank;
                let detail = if culprit == p || culprit >= self.size {
                    "the peer aborted".to_string()
                } else {
                    format!("rank {p} gave up because of rank {culprit}")
                };
                return Err(TransportError::ConnectionLost {
                    peer: if culprit < self.size { culprit } else { p },
                    detail,
                });
            }
        }
        Ok(())
    }

    /// Waits until rank `p`'s counter `c` reaches `target`.
    pub(crate) fn wait_for(
        &self,
        p: Rank,
        c: Counter,
        target: u64,
        deadline: Instant,
    ) -> Result<(), TransportError> {
        let h = self.header(p);
        let ctr = h.counter(c);
        if ctr.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        let start = Instant::now();
        // Phase 1: spin, for as long as spinning has recently paid off (see AdaptiveSpin).
        if self
            .step_spin
            .spin(|| ctr.load(Ordering::Acquire) >= target)
        {
            return Ok(());
        }
        // Phase 2, oversubscribed: yield a few times (cheap when the peer is runnable on our
        // core). With a core per rank a yield would hand the core to unrelated work instead.
        if self.oversubscribed {
            for _ in 0..16 {
                sys::yield_now();
                if ctr.load(Ordering::Acquire) >= target {
                    return Ok(());
                }
            }
        }
        // Phase 3: sleep on the peer's doorbell, waking now and then to check health.
        loop {
            h.sleepers.0.fetch_add(1, Ordering::SeqCst);
            let bell = h.doorbell.0.load(Ordering::SeqCst);
            if ctr.load(Ordering::SeqCst) >= target {
                h.sleepers.0.fetch_sub(1, Ordering::SeqCst);
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            sys::futex_wait(&h.doorbell.0, bell, left.min(Duration::from_millis(5)));
            h.sleepers.0.fetch_sub(1, Ordering::SeqCst);
            if ctr.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            self.check(p, ctr, target, deadline, start)?;
        }
    }

    fn check(
        &self,
        p: Rank,
        ctr: &AtomicU64,
        target: u64,
        deadline: Instant,
        start: Instant,
    ) -> Result<(), TransportError> {
        if let Err(e) = self.check_health(p) {
            // A peer that finished its part and then exited is not a failure.
            if ctr.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            return Err(e);
        }
        if Instant::now() >= deadline {
            return Err(TransportError::Timeout {
                peer: Some(p),
                after: start.elapsed(),
                what: "a shared-memory collective step".into(),
            });
        }
        Ok(())
    }

    /// Fails every current and future collective of this rank and makes peers' waits on it
    /// fail at once.
    pub fn abort(&self, reason: &str) {
        self.abort_because(reason, self.rank);
    }

    /// Aborts, telling peers that rank `culprit` started the failure.
    pub(crate) fn abort_because(&self, reason: &str, culprit: Rank) {
        {
            let mut r = self.abort_reason.lock();
            if r.is_none() {
                *r = Some(reason.to_string());
            }
        }
        self.aborted.store(true, Ordering::Release);
        let h = self.header(self.rank);
        let _ = h.aborted.0.compare_exchange(
            0,
            culprit as u32 + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        // Wake everyone sleeping on any doorbell: peers waiting on us, and our own waiter.
        for p in 0..self.size {
            let h = self.header(p);
            h.doorbell.0.fetch_add(1, Ordering::SeqCst);
            sys::futex_wake_all(&h.doorbell.0);
            h.inbox.0.fetch_add(1, Ordering::SeqCst);
            sys::futex_wake_all(&h.inbox.0);
        }
        for s in self.socks.iter().flatten() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Fails fast if this rank has aborted.
    pub(crate) fn check_not_aborted(&self) -> Result<(), TransportError> {
        if self.aborted.load(Ordering::Acquire) {
            return Err(TransportError::Aborted {
                reason: self
                    .abort_reason
                    .lock()
                    .clone()
                    .unwrap_or_else(|| "aborted".into()),
            });
        }
        Ok(())
    }
}
