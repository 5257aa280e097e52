//! Making connections: the accept loop (tokio, on its own thread) and dialing, on first use,
//! ahead of use (`connect_to`), or to check on a peer a wait has heard nothing from.
//!
//! How duplicates are resolved. Both ranks of a pair may dial each other at the same moment.
//! After the handshake the acceptor answers one verdict byte, `A` (this connection is the pair's
//! connection) or `D` (duplicate, close it), and nothing else is sent on a connection before its
//! verdict. The acceptor decides under the peer's lock, so the decision and the install are one
//! step:
//! - it already has a connection to that peer (or lost one) → `D`;
//! - it is dialing that peer itself and it is the lower rank → `D` (the lower rank's dial wins);
//! - otherwise → `A`, and the connection is installed.
//!
//! A dialer that hears `D` waits for the peer's own connection to arrive through the accept
//! loop. Exactly one connection survives whatever the timing: the higher rank always accepts the
//! lower rank's dial, and the lower rank refuses the higher rank's dial only while its own is
//! under way or done.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hora_transport::{Rank, TransportError};

use crate::peer::Conn;
use crate::transport::Inner;
use hora_transport::handshake::{self, HandshakeError, Purpose};

const ACCEPT: u8 = b'A';
const DUPLICATE: u8 = b'D';

/// Starts the accept loop on a dedicated thread running a current-thread tokio runtime.
pub(crate) fn spawn_acceptor(
    inner: Arc<Inner>,
    listener: TcpListener,
) -> std::io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name(format!("hora-tcp-accept-{}", inner.rank))
        .spawn(move || {
            rt.block_on(accept_loop(&inner, listener));
            // Handshakes still running finish (or time out) on their own; nothing waits for them.
            rt.shutdown_background();
        })
}

async fn accept_loop(inner: &Arc<Inner>, listener: TcpListener) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(rank = inner.rank, error = %e, "cannot start the accept loop");
            return;
        }
    };
    loop {
        tokio::select! {
            () = inner.accept_stop.notified() => return,
            res = listener.accept() => match res {
                Ok((stream, addr)) => {
                    let inner = inner.clone();
                    match stream.into_std() {
                        // The handshake is a few small blocking reads with timeouts; running it
                        // on the blocking pool keeps a silent stranger from stalling accepts.
                        Ok(stream) => drop(tokio::task::spawn_blocking(move || admit(&inner, stream, addr))),
                        Err(e) => tracing::warn!(error = %e, %addr, "dropping an accepted connection"),
                    }
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(rank = inner.rank, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Authenticates one accepted connection and, if it is the pair's connection, installs it.
fn admit(inner: &Inner, mut stream: TcpStream, addr: SocketAddr) {
    let me = inner.rank;
    let budget = inner.config.connect_timeout.max(Duration::from_millis(10));
    let prepared = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(budget)))
        .and_then(|()| stream.set_write_timeout(Some(budget)))
        .and_then(|()| stream.set_nodelay(true));
    if let Err(e) = prepared {
        tracing::warn!(rank = me, %addr, error = %e, "cannot prepare an accepted connection");
        return;
    }
    let id = match handshake::server(&mut stream, &inner.config.secret, Purpose::Peer, me as u64) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(rank = me, %addr, error = %e, "refused a connection that failed the handshake");
            return;
        }
    };
    let peer = match usize::try_from(id) {
        Ok(p) if p < inner.size && p != me => p,
        _ => {
            tracing::warn!(
                rank = me, %addr, claimed = id, size = inner.size,
                "refused a connection claiming an impossible rank"
            );
            return;
        }
    };

    let slot = &inner.slots[peer];
    let mut st = slot.state.lock();
    if inner.aborted.load(Ordering::Acquire) || inner.closed.load(Ordering::Acquire) {
        return;
    }
    let duplicate = st.conn.is_some() || st.lost.is_some() || (st.connecting && me < peer);
    if duplicate {
        tracing::debug!(rank = me, peer, "refusing a duplicate connection");
        let _ = stream.write_all(&[DUPLICATE]);
        return;
    }
    // The verdict goes out before the connection is installed, so it precedes any data.
    let installed = stream
        .write_all(&[ACCEPT])
        .and_then(|()| set_liveness(&stream, inner.config.peer_timeout))
        .and_then(|()| Conn::new(stream, inner.config.sockbuf));
    match installed {
        Ok(conn) => {
            tracing::debug!(rank = me, peer, "accepted connection");
            st.conn = Some(conn);
            drop(st);
            slot.changed.notify_all();
            inner.bell.ring();
        }
        Err(e) => {
            tracing::warn!(rank = me, peer, error = %e, "accepted connection failed before use")
        }
    }
}

/// Makes sure a connection to `peer` exists, dialing it if nobody has: blocks until the
/// connection is there, or fails at `deadline`.
pub(crate) fn ensure_connected(
    inner: &Inner,
    peer: Rank,
    deadline: Instant,
) -> Result<(), TransportError> {
    let slot = &inner.slots[peer];
    let start = Instant::now();
    let mut st = slot.state.lock();
    loop {
        inner.check_aborted()?;
        if let Some(detail) = &st.lost {
            return Err(TransportError::ConnectionLost {
                peer,
                detail: detail.clone(),
            });
        }
        if st.conn.is_some() {
            return Ok(());
        }
        if !st.connecting {
            break;
        }
        if slot.changed.wait_until(&mut st, deadline).timed_out() && st.conn.is_none() {
            return Err(connect_timeout(peer, start));
        }
    }
    st.connecting = true;
    drop(st);

    let dialed = dial(inner, peer, deadline, start);

    let mut st = slot.state.lock();
    st.connecting = false;
    slot.changed.notify_all();
    if let Err(TransportError::ConnectionLost { detail, .. }) = &dialed {
        // The peer is gone for good: later operations on it fail at once, like after a hang-up.
        st.mark_lost(detail.clone());
    }
    match dialed {
        Ok(Some(conn)) => {
            inner.check_aborted()?;
            if st.conn.is_none() && st.lost.is_none() {
                tracing::debug!(rank = inner.rank, peer, "dialed connection accepted");
                st.conn = Some(conn);
            }
            Ok(())
        }
        Ok(None) => {
            // The peer's own dial is the pair's connection; it arrives through our accept loop.
            loop {
                inner.check_aborted()?;
                if let Some(detail) = &st.lost {
                    return Err(TransportError::ConnectionLost {
                        peer,
                        detail: detail.clone(),
                    });
                }
                if st.conn.is_some() {
                    return Ok(());
                }
                if slot.changed.wait_until(&mut st, deadline).timed_out() && st.conn.is_none() {
                    return Err(connect_timeout(peer, start));
                }
            }
        }
        Err(e) => Err(e),
    }
}

fn connect_timeout(peer: Rank, start: Instant) -> TransportError {
    TransportError::Timeout {
        peer: Some(peer),
        after: start.elapsed(),
        what: format!("a connection to rank {peer}"),
    }
}

/// Connects, authenticates and reads the verdict: `Some(conn)` if ours is the pair's connection,
/// `None` if the peer's own dial is.
fn dial(
    inner: &Inner,
    peer: Rank,
    deadline: Instant,
    start: Instant,
) -> Result<Option<Conn>, TransportError> {
    let io = |source: std::io::Error| {
        use std::io::ErrorKind as K;
        match source.kind() {
            K::TimedOut | K::WouldBlock => connect_timeout(peer, start),
            // The peer proved the secret (or had not spoken yet) and then went away: it died
            // while we connected, the same end as a hang-up on an established connection.
            K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                TransportError::ConnectionLost {
                    peer,
                    detail: format!("rank {peer} hung up while we connected to it: {source}"),
                }
            }
            _ => TransportError::Io {
                peer: Some(peer),
                source,
            },
        }
    };
    let remaining = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(1) {
            Err(connect_timeout(peer, start))
        } else {
            Ok(left)
        }
    };
    let addr = inner.directory.lookup(peer, deadline).map_err(|msg| {
        if Instant::now() >= deadline {
            TransportError::Timeout {
                peer: Some(peer),
                after: start.elapsed(),
                what: format!("the address of rank {peer}: {msg}"),
            }
        } else {
            TransportError::Io {
                peer: Some(peer),
                source: std::io::Error::other(msg),
            }
        }
    })?;
    let mut stream = TcpStream::connect_timeout(&addr, remaining()?).map_err(|e| {
        // The address was published by the peer's own listener, which lives as long as its
        // transport: a refusal means the process has exited (or dropped its transport).
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            TransportError::ConnectionLost {
                peer,
                detail: format!(
                    "nothing listens at rank {peer}'s address {addr} any more (connection \
                     refused): it has exited"
                ),
            }
        } else {
            io(e)
        }
    })?;
    let left = remaining()?;
    stream.set_read_timeout(Some(left)).map_err(io)?;
    stream.set_write_timeout(Some(left)).map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    let server_id = handshake::client(
        &mut stream,
        &inner.config.secret,
        Purpose::Peer,
        inner.rank as u64,
    )
    .map_err(|e| match e {
        HandshakeError::Io(source) => io(source),
        other => TransportError::AuthFailed {
            peer: Some(peer),
            detail: other.to_string(),
        },
    })?;
    if server_id != peer as u64 {
        return Err(TransportError::AuthFailed {
            peer: Some(peer),
            detail: format!("the listener at {addr} is rank {server_id}, not rank {peer}"),
        });
    }
    let mut verdict = [0u8; 1];
    stream.read_exact(&mut verdict).map_err(io)?;
    match verdict[0] {
        ACCEPT => set_liveness(&stream, inner.config.peer_timeout)
            .and_then(|()| Conn::new(stream, inner.config.sockbuf))
            .map(Some)
            .map_err(io),
        DUPLICATE => Ok(None),
        other => Err(TransportError::Protocol {
            peer,
            detail: format!("unknown connection verdict {other:#04x}"),
        }),
    }
}

/// Makes a silent peer (host down, link cut: no FIN, no RST ever comes) an error within about
/// `timeout`: keepalive probes start after a third of it on an idle connection, and
/// TCP_USER_TIMEOUT fails a connection whose sent data stays unacknowledged that long. The
/// error then surfaces like any other lost connection, in every wait on that peer.
fn set_liveness(stream: &TcpStream, timeout: Option<Duration>) -> std::io::Result<()> {
    match timeout {
        None => Ok(()),
        Some(t) => crate::sys::set_liveness(std::os::fd::AsRawFd::as_raw_fd(stream), t),
    }
}
