//! The store client: one authenticated TCP connection, one request at a time.

use std::io::{self, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hora_transport::handshake::{self, HandshakeError, Purpose};
use parking_lot::Mutex;

use super::wire::{self, Status};
use super::{Store, StoreError, check_sizes};

/// A connection to a [`StoreServer`](super::StoreServer), authenticated with the job secret.
///
/// Requests are serialised by an internal mutex, so one client can be shared between threads
/// (a waiting `get` holds up the others on the same client; open a second client if that
/// matters). It does not reconnect: after an I/O error every call fails.
#[derive(Debug)]
pub struct StoreClient {
    addr: SocketAddr,
    /// Bound on `set`/`add` round trips, and slack added to a `get`'s own wait.
    io_timeout: Duration,
    conn: Mutex<Conn>,
}

#[derive(Debug)]
struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    /// Set after an I/O or protocol failure: the stream may be out of step, so stop using it.
    broken: bool,
}

impl StoreClient {
    /// Connects and authenticates as `id` (a rank, or [`LAUNCHER_ID`](super::LAUNCHER_ID)).
    /// `timeout` bounds the connect, the handshake and each later `set`/`add`.
    pub fn connect(
        addr: SocketAddr,
        secret: &[u8],
        id: u64,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let connect_err = |source| StoreError::Connect { addr, source };
        let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(connect_err)?;
        stream.set_nodelay(true).map_err(connect_err)?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(connect_err)?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(connect_err)?;
        match handshake::client(&mut stream, secret, Purpose::Store, id) {
            Ok(_) => {}
            Err(HandshakeError::Io(source))
                if source.kind() != io::ErrorKind::UnexpectedEof
                    && source.kind() != io::ErrorKind::ConnectionReset =>
            {
                return Err(StoreError::Connect { addr, source });
            }
            // A server that hangs up mid-handshake has refused us.
            Err(e) => {
                return Err(StoreError::Auth {
                    addr,
                    detail: e.to_string(),
                });
            }
        }
        let reader = BufReader::new(stream.try_clone().map_err(connect_err)?);
        Ok(Self {
            addr,
            io_timeout: timeout,
            conn: Mutex::new(Conn {
                writer: stream,
                reader,
                broken: false,
            }),
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one request and reads its response; `wait` is extra time the server may hold it.
    fn round_trip(&self, request: &[u8], wait: Duration) -> Result<(Status, Vec<u8>), StoreError> {
        let mut c = self.conn.lock();
        if c.broken {
            return Err(self.io_err(io::Error::new(
                io::ErrorKind::NotConnected,
                "an earlier failure closed this store connection",
            )));
        }
        let result = self.exchange(&mut c, request, wait);
        if result.is_err() {
            c.broken = true;
        }
        result
    }

    fn exchange(
        &self,
        c: &mut Conn,
        request: &[u8],
        wait: Duration,
    ) -> Result<(Status, Vec<u8>), StoreError> {
        use std::io::Write;
        c.writer.write_all(request).map_err(|e| self.io_err(e))?;
        let read_timeout = self.io_timeout.saturating_add(wait);
        c.writer
            .set_read_timeout(Some(read_timeout))
            .map_err(|e| self.io_err(e))?;
        let (status, payload) = wire::read_response(&mut c.reader).map_err(|e| self.io_err(e))?;
        let status = status.map_err(|s| StoreError::Protocol {
            detail: format!("unknown response status {s} from {}", self.addr),
        })?;
        Ok((status, payload))
    }

    fn io_err(&self, source: io::Error) -> StoreError {
        StoreError::Io {
            addr: self.addr,
            source,
        }
    }

    /// Turns a non-OK status into the matching error.
    fn fail(&self, key: &str, status: Status, payload: &[u8], waited: Duration) -> StoreError {
        let detail = String::from_utf8_lossy(payload).into_owned();
        if matches!(status, Status::TooLarge | Status::BadRequest) {
            // The server hangs up after these.
            self.conn.lock().broken = true;
        }
        match status {
            Status::Timeout => StoreError::Timeout {
                key: key.to_owned(),
                after: waited,
            },
            Status::NotCounter => StoreError::NotACounter {
                key: key.to_owned(),
            },
            Status::ShutDown => StoreError::ShutDown,
            Status::TooLarge | Status::BadRequest | Status::Ok => StoreError::Protocol {
                detail: format!("the store at {} rejected a request: {detail}", self.addr),
            },
        }
    }

    fn protocol(&self, detail: &str) -> StoreError {
        self.conn.lock().broken = true;
        StoreError::Protocol {
            detail: format!("{detail} from {}", self.addr),
        }
    }
}

impl Store for StoreClient {
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        check_sizes(key, Some(value))?;
        match self.round_trip(&wire::encode_set(key, value), Duration::ZERO)? {
            (Status::Ok, p) if p.is_empty() => Ok(()),
            (Status::Ok, _) => Err(self.protocol("unexpected payload in a SET response")),
            (s, p) => Err(self.fail(key, s, &p, Duration::ZERO)),
        }
    }

    fn get(&self, key: &str, deadline: Instant) -> Result<Vec<u8>, StoreError> {
        check_sizes(key, None)?;
        let start = Instant::now();
        let wait = deadline.saturating_duration_since(start);
        match self.round_trip(&wire::encode_get(key, wait), wait)? {
            (Status::Ok, p) => Ok(p),
            (s, p) => Err(self.fail(key, s, &p, start.elapsed())),
        }
    }

    fn add(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        check_sizes(key, None)?;
        match self.round_trip(&wire::encode_add(key, delta), Duration::ZERO)? {
            (Status::Ok, p) => match <[u8; 8]>::try_from(p.as_slice()) {
                Ok(b) => Ok(i64::from_le_bytes(b)),
                Err(_) => Err(self.protocol("malformed ADD response")),
            },
            (s, p) => Err(self.fail(key, s, &p, Duration::ZERO)),
        }
    }
}
