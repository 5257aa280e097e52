//! The store server: an accept thread plus one thread per authenticated connection, all sharing
//! one [`MemoryStore`]. A blocked `get` waits on the table's condition variable in its
//! connection's thread, so it never holds up other clients.

use std::collections::HashMap;
use std::io::{self, BufReader};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hora_transport::handshake::{self, Purpose};
use parking_lot::Mutex;

use super::wire::{self, ReadError, Request, Status};
use super::{MemoryStore, SERVER_ID, Store, StoreError};

/// How long a new connection has to complete the handshake; a silent stranger is dropped then.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a response write may stall before the client is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many connections are served at once (jobs have at most a few hundred ranks);
/// past it new connections are closed, so a flood cannot exhaust threads.
const MAX_CONNECTIONS: usize = 4096;

#[derive(Debug)]
struct Shared {
    store: MemoryStore,
    secret: Vec<u8>,
    stopping: AtomicBool,
    /// Clones of live sockets, so shutdown can unblock their reader threads.
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
}

/// The rendezvous store server; serves until dropped or shut down.
#[derive(Debug)]
pub struct StoreServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl StoreServer {
    /// Binds `bind` (port 0 picks a free port) and starts serving clients holding `secret`.
    pub fn start(bind: SocketAddr, secret: Vec<u8>) -> io::Result<Self> {
        if secret.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the job secret is empty",
            ));
        }
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: MemoryStore::new(),
            secret,
            stopping: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        });
        // Threads inherit the creator's log subscriber, so the server's warnings land wherever
        // the code that started it sends its logs.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let s = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name("hora-store-accept".into())
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    accept_loop(&listener, &s, &dispatch)
                });
            })?;
        tracing::debug!(%addr, "rendezvous store listening");
        Ok(Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes every connection and fails waiting gets.
    pub fn shutdown(self) {
        drop(self);
    }

    fn stop(&mut self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.store.close();
        for (_, c) in self.shared.conns.lock().drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Wake the blocking accept with a connection of our own; it sees `stopping` and returns.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let woke = TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok();
        if let Some(h) = self.acceptor.take()
            && woke
        {
            let _ = h.join();
        }
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, dispatch: &tracing::Dispatch) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "rendezvous store: accept failed");
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        if shared.conns.lock().len() >= MAX_CONNECTIONS {
            tracing::warn!(%peer, "rendezvous store: too many connections, refusing");
            continue;
        }
        let s = Arc::clone(shared);
        let d = dispatch.clone();
        let spawned = thread::Builder::new()
            .name("hora-store-conn".into())
            .spawn(move || tracing::dispatcher::with_default(&d, || serve(stream, peer, &s)));
        if let Err(e) = spawned {
            tracing::warn!(%peer, error = %e, "rendezvous store: cannot start a connection thread");
        }
    }
}

fn serve(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    if stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT)).is_err()
    {
        return;
    }
    let client_id = match handshake::server(&mut stream, &shared.secret, Purpose::Store, SERVER_ID)
    {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "rendezvous store: refused a connection that failed authentication");
            return;
        }
    };
    // Authenticated clients may idle for as long as the job runs between requests.
    if stream.set_read_timeout(None).is_err()
        || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
    {
        return;
    }
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    match stream.try_clone() {
        Ok(c) => {
            let mut conns = shared.conns.lock();
            // Registering under the lock that `stop` drains means a connection that raced with
            // shutdown is either closed by `stop` or sees `stopping` here.
            if shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            conns.insert(conn, c);
        }
        Err(_) => return,
    }
    tracing::debug!(%peer, client_id, "rendezvous store: client connected");
    if let Err(e) = serve_requests(&mut stream, shared)
        && !shared.stopping.load(Ordering::SeqCst)
    {
        tracing::warn!(%peer, client_id, error = %e, "rendezvous store: dropped a connection");
    }
    shared.conns.lock().remove(&conn);
}

fn serve_requests(stream: &mut TcpStream, shared: &Shared) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let req = match wire::read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(ReadError::Io(e)) => return Err(e),
            Err(ReadError::Reject(status, why)) => {
                let _ = wire::write_response(stream, status, why.as_bytes());
                return Err(io::Error::new(io::ErrorKind::InvalidData, why));
            }
        };
        let (status, payload) = execute(&shared.store, req);
        wire::write_response(stream, status, &payload)?;
    }
}

fn execute(store: &MemoryStore, req: Request) -> (Status, Vec<u8>) {
    let result = match req {
        Request::Set { key, value } => store.set(&key, &value).map(|()| Vec::new()),
        Request::Get { key, wait } => {
            // An absurd wait (u64::MAX ms) would overflow Instant; cap it at a day.
            let wait = wait.min(Duration::from_secs(86_400));
            store.get(&key, Instant::now() + wait)
        }
        Request::Add { key, delta } => store.add(&key, delta).map(|v| v.to_le_bytes().to_vec()),
    };
    match result {
        Ok(payload) => (Status::Ok, payload),
        Err(StoreError::Timeout { .. }) => (Status::Timeout, Vec::new()),
        Err(StoreError::ShutDown) => (Status::ShutDown, Vec::new()),
        Err(e @ StoreError::NotACounter { .. }) => (Status::NotCounter, e.to_string().into_bytes()),
        Err(e @ StoreError::TooLarge { .. }) => (Status::TooLarge, e.to_string().into_bytes()),
        Err(e) => (Status::BadRequest, e.to_string().into_bytes()),
    }
}
