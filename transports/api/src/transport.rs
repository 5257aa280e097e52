//! The [`Transport`] trait and its small vocabulary types.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Op, TransportError};

/// A process's index in the job, `0..size`.
pub type Rank = usize;

/// Identifies a message stream between two ranks: an operation kind and a sequence number.
///
/// Two in-flight messages between the same pair of ranks in the same direction must not share
/// a tag unless the receiver wants them in send order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u64);

impl Tag {
    const SEQ_BITS: u32 = 56;

    /// Builds a tag from an operation kind (8 bits) and a sequence number (56 bits, wrapping).
    pub const fn new(kind: u8, seq: u64) -> Self {
        Self(((kind as u64) << Self::SEQ_BITS) | (seq & ((1 << Self::SEQ_BITS) - 1)))
    }

    /// The operation-kind byte.
    pub const fn kind(self) -> u8 {
        (self.0 >> Self::SEQ_BITS) as u8
    }

    /// The sequence part.
    pub const fn seq(self) -> u64 {
        self.0 & ((1 << Self::SEQ_BITS) - 1)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({}:{})", self.kind(), self.seq())
    }
}

/// What memory a transport can move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Host (CPU) memory.
    pub host_memory: bool,
    /// Device (GPU) memory.
    pub device_memory: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            host_memory: true,
            device_memory: false,
        }
    }
}

/// Wakes a thread blocked in [`Transport::recv_msg`] without a message, from any thread.
#[derive(Clone)]
pub struct Waker(Arc<dyn Fn() + Send + Sync>);

impl Waker {
    /// Wraps the function that performs the wake-up.
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Wakes the blocked receiver (or makes its next blocking call return at once).
    pub fn wake(&self) {
        (self.0)()
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Waker")
    }
}

/// Moves bytes between the ranks of one job. See the crate docs for the contract.
pub trait Transport: Send + Sync + fmt::Debug {
    /// This process's rank.
    fn rank(&self) -> Rank;

    /// Number of ranks in the job.
    fn size(&self) -> usize;

    /// Moves as many bytes of `ops` as can move without blocking. Returns `true` once every op
    /// is complete. Calling it right after building ops starts them early, so the kernel (or the
    /// peer) can move data while the caller computes.
    fn progress(&self, ops: &mut [Op<'_>]) -> Result<bool, TransportError>;

    /// Blocks until every op is complete, or fails at `deadline`, on abort, or when a peer that
    /// an op needs fails. Waits adaptively: spins briefly, then sleeps in the kernel.
    fn wait(&self, ops: &mut [Op<'_>], deadline: Instant) -> Result<(), TransportError>;

    /// Sends one variable-length message (control traffic).
    fn send_msg(&self, peer: Rank, tag: Tag, msg: &[u8]) -> Result<(), TransportError>;

    /// Receives the next variable-length message with `tag`, from `from` or from any rank.
    /// Returns `Ok(None)` if woken by [`Transport::waker`] before a message arrived, and a
    /// `Timeout` error at `deadline`.
    fn recv_msg(
        &self,
        from: Option<Rank>,
        tag: Tag,
        deadline: Instant,
    ) -> Result<Option<(Rank, Vec<u8>)>, TransportError>;

    /// A handle that interrupts a blocked [`Transport::recv_msg`] on this transport.
    fn waker(&self) -> Waker;

    /// Fails every current and future operation with `Aborted { reason }` and wakes all
    /// waiters. Peers notice through their connections closing.
    fn abort(&self, reason: &str);

    /// What memory this transport can move.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Pre-registers a buffer that will be used repeatedly (RDMA memory registration).
    /// A no-op for transports that do not need it.
    fn register(&self, _buf: &[u8]) -> Result<(), TransportError> {
        Ok(())
    }

    /// Blocking send of one fixed-size message.
    fn send(
        &self,
        peer: Rank,
        tag: Tag,
        data: &[u8],
        deadline: Instant,
    ) -> Result<(), TransportError> {
        self.wait(&mut [Op::send(peer, tag, data)], deadline)
    }

    /// Blocking receive of one fixed-size message.
    fn recv(
        &self,
        peer: Rank,
        tag: Tag,
        buf: &mut [u8],
        deadline: Instant,
    ) -> Result<(), TransportError> {
        self.wait(&mut [Op::recv(peer, tag, buf)], deadline)
    }
}

/// Returns the deadline `timeout` from now, saturating far in the future.
pub fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or(now + Duration::from_secs(86_400 * 365))
}
