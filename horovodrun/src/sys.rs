//! The few operating-system calls std does not offer: signalling a process group, peeking at a
//! child's end, reading the host name, tying a rank's life to the launcher's. The only `unsafe`
//! in the launcher lives here.

use std::io;

/// Sends `sig` to every process in the group `pgid`. A group that no longer exists is not an
/// error (it has nothing left to stop).
pub(crate) fn signal_group(pgid: u32, sig: i32) -> io::Result<()> {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "process group id out of range",
        ));
    };
    // A pgid of 0 or 1 would signal our own group or every process we may signal: never do it.
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal group 0/1",
        ));
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let r = unsafe { libc::kill(-pgid, sig) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Sends `sig` to our child `pid`, which must not have been reaped yet (else the pid may
/// name another process); errors are ignored: a child that already ended needs no signal.
pub(crate) fn signal_child(pid: libc::pid_t, sig: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(pid, sig) };
}

/// Whether we run as root (mpirun wants to be told it may).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() }) == 0
}

/// True while any process is left in the group `pgid`.
pub(crate) fn group_alive(pgid: u32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: as above; signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(-pgid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// True once our child `pid` has ended, reaped or not, without reaping it. A child another
/// thread has already reaped (`ECHILD`) counts as ended: its waiter's news is on its way.
/// Only meant for pids of children we have not yet heard end (a pid could be reused after).
pub(crate) fn child_ended(pid: u32) -> bool {
    // Through pid_t: a pid that does not fit it is no child of ours.
    let Some(id) = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .and_then(|p| libc::id_t::try_from(p).ok())
    else {
        return false;
    };
    // SAFETY: siginfo_t is plain data for which all zero bytes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid siginfo_t that outlives the call; WNOWAIT leaves the child
    // to its waiter thread, WNOHANG makes the call return at once.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            id,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if r != 0 {
        return io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD);
    }
    // SAFETY: waitid filled `info` for a child state change (or left it zeroed: si_pid is 0
    // while the child still runs).
    unsafe { info.si_pid() != 0 }
}

/// This machine's host name, if the OS will tell.
pub(crate) fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call; gethostname writes
    // at most `len` bytes.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec())
        .ok()
        .filter(|s| !s.is_empty())
}

/// The local time as Python's `time.asctime()` writes it, which is how Horovod stamps output
/// lines: `Tue Dec  8 10:11:12 2026`.
pub(crate) fn asctime_now() -> String {
    // SAFETY: time(NULL) only returns the clock.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    asctime_of(now)
}

/// [`asctime_now`] for a given time (seconds since the epoch), in the local time zone.
pub(crate) fn asctime_of(t: libc::time_t) -> String {
    // SAFETY: an all-zero `tm` is a valid value for localtime_r to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; localtime_r is the thread-safe form.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return String::new();
    }
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let day = DAYS.get(tm.tm_wday as usize).unwrap_or(&"???");
    let month = MONTHS.get(tm.tm_mon as usize).unwrap_or(&"???");
    format!(
        "{day} {month} {:2} {:02}:{:02}:{:02} {}",
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        tm.tm_year + 1900
    )
}

/// The usual name of a signal number, e.g. `SIGKILL`.
pub(crate) fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => "unknown signal",
    }
}

/// Arranges for the child to get SIGKILL if the launcher dies without stopping it (say, it was
/// itself SIGKILLed), so a lost launcher does not leave ranks holding ports and devices.
/// Linux only; elsewhere the ranks notice their broken connections instead.
pub(crate) fn die_with_launcher(cmd: &mut std::process::Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let launcher = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // async-signal-safe calls prctl(2) and getppid(2); it allocates nothing (the error it
        // may return is built from a raw OS code).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The launcher may have died between fork and prctl: then nobody will signal.
                if u32::try_from(libc::getppid()).ok() != Some(launcher) {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// The local address the kernel would use to reach `to` (no packet is sent: a UDP socket is
/// only connected, which picks the route).
pub(crate) fn route_to(to: std::net::SocketAddr) -> io::Result<std::net::IpAddr> {
    let any: std::net::SocketAddr = if to.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(any)?;
    s.connect(to)?;
    Ok(s.local_addr()?.ip())
}

#[cfg(test)]
mod tests;
