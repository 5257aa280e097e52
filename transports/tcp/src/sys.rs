//! The few system calls std does not offer: eventfd, ppoll, vectored sends without SIGPIPE,
//! reads into a vector's spare capacity, and socket buffer sizes. All `unsafe` of the crate
//! lives here, each block with its reasoning.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A Linux eventfd used as the transport's doorbell: any thread may ring it, the waiting thread
/// sleeps in `poll(2)` on it next to its sockets.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    /// Creates a non-blocking, close-on-exec eventfd.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a negative return is checked before the fd is used.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd, is valid, and nothing else owns it.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the fd readable (wakes a poller). Never blocks.
    pub(crate) fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local; the fd is owned by `self`. A full counter
        // (EAGAIN) already means "readable", so the result can be ignored.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Clears the readable state.
    pub(crate) fn drain(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live local; EAGAIN (already clear) is harmless.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&raw mut count).cast(), 8) };
    }

    /// The raw fd, for poll sets.
    pub(crate) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Waits for events on `fds` for at most `timeout` (`None`: return at once). Returns the number
/// of ready entries; EINTR counts as zero ready.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let ts_ptr: *const libc::timespec = match &ts {
        Some(t) => t,
        None => &zero,
    };
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd structs; the
    // timespec lives until the call returns; a null sigmask keeps the current one.
    let rc = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            ts_ptr,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(err);
    }
    Ok(rc as usize)
}

/// Sends `a` then `b` with one `sendmsg(2)` (non-blocking, no SIGPIPE on a closed peer).
/// Returns how many bytes of `a ++ b` the kernel took.
pub(crate) fn send2(fd: RawFd, a: &[u8], b: &[u8]) -> io::Result<usize> {
    let mut iov = [
        libc::iovec {
            iov_base: a.as_ptr() as *mut libc::c_void,
            iov_len: a.len(),
        },
        libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        },
    ];
    // SAFETY: msghdr is plain data; all-zero is a valid "no name, no control data" value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    let (iov_ptr, iov_len) = if a.is_empty() {
        (iov[1..].as_mut_ptr(), 1)
    } else {
        (iov.as_mut_ptr(), 2)
    };
    msg.msg_iov = iov_ptr;
    msg.msg_iovlen = iov_len;
    // SAFETY: the iovecs point into `a` and `b`, which outlive the call, and the kernel only
    // reads from them; `msg` is a valid msghdr referring to them.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Receives at most `max` bytes, appending them to `buf` without zero-filling first.
pub(crate) fn recv_append(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    // SAFETY: `spare` is writable memory owned by `buf` of at least `want` bytes; recv writes
    // at most `want` bytes there and reports how many.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), want, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: recv initialised the first `n` bytes of the spare capacity (n <= want).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Sets SO_SNDBUF and SO_RCVBUF (the kernel doubles and caps them).
pub(crate) fn set_buffer_sizes(fd: RawFd, bytes: usize) -> io::Result<()> {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: passes a pointer to a live c_int and its exact size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&raw const v).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Turns on keepalive (first probe after `timeout / 3`, then every `timeout / 6`, four probes)
/// and TCP_USER_TIMEOUT = `timeout`, so a dead link fails the socket within about `timeout`.
pub(crate) fn set_liveness(fd: RawFd, timeout: Duration) -> io::Result<()> {
    let secs = timeout.as_secs().clamp(3, 86_400) as libc::c_int;
    let ms = timeout.as_millis().clamp(1000, i32::MAX as u128) as libc::c_int;
    let opts = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, (secs / 3).max(1)),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, (secs / 6).max(1)),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 4),
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms),
    ];
    for (level, opt, v) in opts {
        // SAFETY: passes a pointer to a live c_int and its exact size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                (&raw const v).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
