//! Setting up a group, step by step: the segment's layout, creating and mapping our segment,
//! meeting the other ranks over abstract sockets to swap descriptors, and mapping theirs.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hora_transport::{Rank, TransportError};

use super::{HEADER_BYTES, Header, MAGIC, PairLines, ShmConfig, io_err};
use crate::sys;

/// The validated, rounded shape of every segment of a group (the same on every rank).
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    pub(super) rank: Rank,
    pub(super) size: usize,
    pub(super) slice: usize,
    pub(super) depth: usize,
    pub(super) ring: usize,
    pub(super) seg_len: usize,
}

impl Layout {
    /// Checks `rank < size` and rounds slices and rings to whole cache lines.
    pub(super) fn of(cfg: &ShmConfig) -> Result<Self, TransportError> {
        let (rank, size) = (cfg.rank, cfg.size);
        if size == 0 || rank >= size {
            return Err(TransportError::InvalidPeer {
                peer: rank,
                size,
                me: rank,
            });
        }
        let slice = cfg.slice_bytes.max(64).div_ceil(64) * 64;
        let depth = cfg.depth.max(1);
        let ring = cfg.ring_bytes.div_ceil(64) * 64;
        let seg_len = HEADER_BYTES
            + depth * size * slice
            + size * std::mem::size_of::<PairLines>()
            + size * ring;
        Ok(Self {
            rank,
            size,
            slice,
            depth,
            ring,
            seg_len,
        })
    }

    /// The shape as written into a header: (size, slice, depth, ring).
    fn shape(&self) -> [usize; 4] {
        [self.size, self.slice, self.depth, self.ring]
    }
}

/// Creates and maps this rank's segment and writes its header (shape, then magic).
pub(super) fn create_segment(layout: &Layout) -> Result<(OwnedFd, sys::Mapping), TransportError> {
    let seg_len = layout.seg_len;
    let fd = sys::memfd(&format!("hora-shm-{}", layout.rank), seg_len)
        .map_err(|e| io_err(format!("cannot create a shared-memory segment: {e}"), None))?;
    let own = sys::Mapping::map(&fd, seg_len)
        .map_err(|e| io_err(format!("cannot map a {seg_len}-byte segment: {e}"), None))?;
    // SAFETY: the mapping is at least HEADER_BYTES long, page aligned, and Header holds
    // only atomics (valid for any bytes); nobody else can see it yet.
    let h = unsafe { &*own.ptr().cast::<Header>() };
    for (i, v) in layout.shape().into_iter().enumerate() {
        h.shape.0[i].store(v as u64, Ordering::Relaxed);
    }
    h.magic.0.store(MAGIC, Ordering::Release);
    Ok((fd, own))
}

/// What the meeting collected, by peer rank: its segment descriptor and its socket.
pub(super) struct Peers {
    pub(super) fds: Vec<Option<OwnedFd>>,
    pub(super) socks: Vec<Option<UnixStream>>,
}

impl Peers {
    /// Nothing collected yet for a group of `size`.
    pub(super) fn new(size: usize) -> Self {
        Self {
            fds: (0..size).map(|_| None).collect(),
            socks: (0..size).map(|_| None).collect(),
        }
    }
}

/// One rank's side of the meeting over abstract sockets, bounded by one deadline.
pub(super) struct Meeting<'a> {
    pub(super) cfg: &'a ShmConfig,
    pub(super) layout: &'a Layout,
    pub(super) deadline: Instant,
}

impl Meeting<'_> {
    /// The abstract socket name of rank `r` in this job.
    fn name(&self, r: Rank) -> String {
        format!("{}/{r}", self.cfg.job)
    }

    /// Listens for the higher ranks (the highest rank has none and listens for nobody).
    pub(super) fn listen(&self) -> Result<Option<UnixListener>, TransportError> {
        let rank = self.layout.rank;
        if rank + 1 >= self.layout.size {
            return Ok(None);
        }
        let addr = SocketAddr::from_abstract_name(self.name(rank).as_bytes())
            .map_err(|e| io_err(format!("bad job name {:?}: {e}", self.cfg.job), None))?;
        let l = UnixListener::bind_addr(&addr).map_err(|e| {
            io_err(
                format!(
                    "cannot listen on the abstract socket {:?}: {e}",
                    self.name(rank)
                ),
                None,
            )
        })?;
        l.set_nonblocking(true)
            .map_err(|e| io_err(format!("listener: {e}"), None))?;
        Ok(Some(l))
    }

    /// Our hello: the magic and our rank.
    fn announce(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..].copy_from_slice(&(self.layout.rank as u64).to_le_bytes());
        b
    }

    /// The rank a peer's hello names, if it is a valid other rank of this group.
    fn parse(&self, b: &[u8; 16], from: &str) -> Result<Rank, TransportError> {
        let magic = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let r = u64::from_le_bytes(b[8..].try_into().expect("8 bytes")) as usize;
        if magic != MAGIC || r >= self.layout.size || r == self.layout.rank {
            return Err(io_err(
                format!("unexpected shared-memory hello from {from}: rank {r}"),
                None,
            ));
        }
        Ok(r)
    }

    /// Fails unless the peer process runs as our user.
    fn check_user(&self, s: &UnixStream, peer: Option<Rank>) -> Result<(), TransportError> {
        let (_, uid) = sys::peer_cred(s).map_err(|e| io_err(format!("SO_PEERCRED: {e}"), peer))?;
        if uid != sys::euid() {
            return Err(TransportError::AuthFailed {
                peer,
                detail: format!("shared-memory peer runs as uid {uid}, not ours"),
            });
        }
        Ok(())
    }

    /// Time left before the deadline, or the set-up timeout once it has passed.
    fn remaining(&self, peer: Option<Rank>) -> Result<Duration, TransportError> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| TransportError::Timeout {
                peer,
                after: self.cfg.connect_timeout,
                what: "shared-memory set-up".into(),
            })
    }

    /// Dials every lower rank (retrying until it listens), sends ours, receives theirs.
    pub(super) fn dial_lower(&self, fd: &OwnedFd, peers: &mut Peers) -> Result<(), TransportError> {
        for p in 0..self.layout.rank {
            let s = self.dial(p)?;
            self.check_user(&s, Some(p))?;
            s.set_read_timeout(Some(self.remaining(Some(p))?))
                .map_err(|e| io_err(e, Some(p)))?;
            sys::send_fd(&s, &self.announce(), fd.as_raw_fd())
                .map_err(|e| io_err(format!("sending our segment: {e}"), Some(p)))?;
            let mut hello = [0u8; 16];
            let pfd = sys::recv_fd(&s, &mut hello)
                .map_err(|e| io_err(format!("receiving its segment: {e}"), Some(p)))?;
            if self.parse(&hello, &format!("rank {p}"))? != p {
                return Err(io_err("answered with the wrong rank", Some(p)));
            }
            peers.fds[p] = Some(pfd);
            peers.socks[p] = Some(s);
        }
        Ok(())
    }

    /// Connects to rank `p`'s listener, waiting for it to appear until the deadline.
    fn dial(&self, p: Rank) -> Result<UnixStream, TransportError> {
        let addr = SocketAddr::from_abstract_name(self.name(p).as_bytes())
            .map_err(|e| io_err(e, Some(p)))?;
        loop {
            match UnixStream::connect_addr(&addr) {
                Ok(s) => return Ok(s),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                    ) =>
                {
                    self.remaining(Some(p))?;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(io_err(format!("connect: {e}"), Some(p))),
            }
        }
    }

    /// Accepts every higher rank: receives theirs, then sends ours.
    pub(super) fn accept_higher(
        &self,
        l: &UnixListener,
        fd: &OwnedFd,
        peers: &mut Peers,
    ) -> Result<(), TransportError> {
        let rank = self.layout.rank;
        let mut missing = self.layout.size - 1 - rank;
        while missing > 0 {
            let s = match l.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.remaining(None)?;
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(e) => return Err(io_err(format!("accept: {e}"), None)),
            };
            s.set_nonblocking(false).map_err(|e| io_err(e, None))?;
            self.check_user(&s, None)?;
            s.set_read_timeout(Some(self.remaining(None)?))
                .map_err(|e| io_err(e, None))?;
            let mut hello = [0u8; 16];
            let pfd = sys::recv_fd(&s, &mut hello)
                .map_err(|e| io_err(format!("receiving a segment: {e}"), None))?;
            let p = self.parse(&hello, "a connecting rank")?;
            if p < rank || peers.fds[p].is_some() {
                return Err(io_err(format!("duplicate hello from rank {p}"), Some(p)));
            }
            sys::send_fd(&s, &self.announce(), fd.as_raw_fd())
                .map_err(|e| io_err(format!("sending our segment: {e}"), Some(p)))?;
            peers.fds[p] = Some(pfd);
            peers.socks[p] = Some(s);
            missing -= 1;
        }
        Ok(())
    }
}

/// Maps every peer's segment (checking its header has our shape) and puts ours at our rank.
pub(super) fn map_peers(
    layout: &Layout,
    fds: Vec<Option<OwnedFd>>,
    own: sys::Mapping,
) -> Result<Vec<sys::Mapping>, TransportError> {
    let mut own = Some(own);
    let mut maps = Vec::with_capacity(layout.size);
    for (p, pfd) in fds.into_iter().enumerate() {
        if p == layout.rank {
            maps.push(own.take().expect("our rank comes once"));
            continue;
        }
        let pfd = pfd.expect("every peer answered");
        let m = sys::Mapping::map(&pfd, layout.seg_len)
            .map_err(|e| io_err(format!("cannot map rank {p}'s segment: {e}"), Some(p)))?;
        check_peer_header(layout, p, &m)?;
        maps.push(m);
    }
    Ok(maps)
}

/// Fails unless rank `p`'s mapped segment carries the magic and our shape.
fn check_peer_header(layout: &Layout, p: Rank, m: &sys::Mapping) -> Result<(), TransportError> {
    // SAFETY: as for our own header: mapped, aligned, atomics only.
    let h = unsafe { &*m.ptr().cast::<Header>() };
    let shape = [0, 1, 2, 3].map(|i| h.shape.0[i].load(Ordering::Relaxed) as usize);
    let ours = layout.shape();
    if h.magic.0.load(Ordering::Acquire) != MAGIC || shape != ours {
        return Err(io_err(
            format!(
                "rank {p}'s segment has shape (size, slice, depth, ring) = {shape:?}, ours is {ours:?}: \
                 every rank must use the same shared-memory settings"
            ),
            Some(p),
        ));
    }
    Ok(())
}

/// The spin budget and whether the group has more ranks than this host has cores.
pub(super) fn effective_spin(size: usize, spin: Duration) -> (Duration, bool) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let oversubscribed = size > cores;
    // With more ranks than cores a spinning waiter holds the core its peer needs.
    if oversubscribed {
        (Duration::ZERO, true)
    } else {
        (spin, false)
    }
}
