//! Strangers at a rank's listening port are refused (and logged) without disturbing the job.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hora_tcp::handshake::{self, HandshakeError, Purpose};
use hora_tcp::{MemoryDirectory, PeerDirectory, TcpConfig, TcpTransport};
use hora_transport::conformance::{pattern, run_ranks};
use hora_transport::{Rank, Tag, Transport, TransportError, deadline_after};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

const SECRET: &[u8] = b"the real job secret";

/// Collects every warning of the process, so tests can check that refusals are logged.
struct Capture;

static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        WARNINGS.lock().unwrap().push(line.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn capture_warnings() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| tracing::subscriber::set_global_default(Capture).expect("one subscriber"));
}

/// Waits (briefly) for a warning that mentions `needle` and `addr`.
fn warned(needle: &str, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = addr.to_string();
    while Instant::now() < deadline {
        if WARNINGS
            .lock()
            .unwrap()
            .iter()
            .any(|w| w.contains(needle) && w.contains(&addr))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn job(n: usize, connect_timeout: Duration) -> Vec<TcpTransport> {
    let dir = MemoryDirectory::new();
    (0..n)
        .map(|rank| {
            let mut c = TcpConfig::new(rank, n, SECRET.to_vec());
            c.connect_timeout = connect_timeout;
            TcpTransport::new(c, dir.clone()).unwrap()
        })
        .collect()
}

/// True once the server closes the connection (EOF or reset) without sending anything more.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// The hello a client sends first (see the handshake module's wire description).
fn hello(id: u64) -> Vec<u8> {
    let mut h = b"HORA".to_vec();
    h.extend_from_slice(&[1, Purpose::Peer as u8]);
    h.extend_from_slice(&id.to_le_bytes());
    h.extend_from_slice(&[0x5a; 32]);
    h
}

fn exchange_works(ranks: Vec<TcpTransport>) {
    run_ranks(ranks, |rank, t| {
        let dl = deadline_after(Duration::from_secs(10));
        let peer = 1 - rank;
        let mut buf = vec![0u8; 5000];
        t.send(peer, Tag::new(1, rank as u64), &pattern(rank, 5000), dl)
            .unwrap();
        t.recv(peer, Tag::new(1, peer as u64), &mut buf, dl)
            .unwrap();
        assert_eq!(buf, pattern(peer, 5000));
    });
}

#[test]
fn strangers_are_refused_and_the_job_goes_on() {
    capture_warnings();
    // A long handshake budget: a silent stranger holds its handshake that long.
    let ranks = job(2, Duration::from_secs(30));
    let target = ranks[0].local_addr();

    // 1. Silent: connects and says nothing, and stays for the whole test.
    let silent = TcpStream::connect(target).unwrap();

    // 2. Wrong secret, speaking the protocol: the client side notices the server's proof is
    //    wrong, and a forged client proof is refused by the server.
    let mut wrong = TcpStream::connect(target).unwrap();
    wrong
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let err = handshake::client(&mut wrong, b"a guess", Purpose::Peer, 1).unwrap_err();
    assert!(matches!(err, HandshakeError::BadProof), "{err:?}");
    let mut forger = TcpStream::connect(target).unwrap();
    forger.write_all(&hello(1)).unwrap();
    let mut reply = [0u8; 4 + 1 + 8 + 32 + 32];
    forger
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    forger.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[..4], b"HORA");
    forger.write_all(&[0u8; 32]).unwrap();
    assert!(
        closed_by_server(&mut forger),
        "a forged proof got an answer"
    );
    assert!(
        warned("handshake", forger.local_addr().unwrap()),
        "refusal not logged"
    );

    // 3. Garbage: dropped at once.
    let mut garbage = TcpStream::connect(target).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: hora\r\n\r\n")
        .unwrap();
    assert!(closed_by_server(&mut garbage), "garbage got an answer");
    assert!(
        warned("not a hora peer", garbage.local_addr().unwrap()),
        "garbage not logged"
    );

    // The real ranks make first contact while the silent stranger is still connected.
    let start = Instant::now();
    exchange_works(ranks);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "peers were held up: {:?}",
        start.elapsed()
    );
    drop(silent);
}

#[test]
fn a_holder_of_the_secret_claiming_an_impossible_rank_is_refused() {
    capture_warnings();
    let ranks = job(2, Duration::from_secs(10));
    let target = ranks[0].local_addr();
    for claimed in [0u64, 2, 7, u64::MAX] {
        let mut s = TcpStream::connect(target).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The proofs check out (the secret is right), but rank 0 never sends its verdict.
        let server = handshake::client(&mut s, SECRET, Purpose::Peer, claimed).unwrap();
        assert_eq!(server, 0);
        assert!(
            closed_by_server(&mut s),
            "rank 0 accepted a connection claiming rank {claimed}"
        );
        assert!(
            warned("impossible rank", s.local_addr().unwrap()),
            "claim {claimed} not logged"
        );
    }
    exchange_works(ranks);
}

#[test]
fn a_store_connection_is_not_a_peer_connection() {
    let ranks = job(2, Duration::from_secs(10));
    let mut s = TcpStream::connect(ranks[1].local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The rank hangs up as soon as it reads the purpose, before proving anything.
    let err = handshake::client(&mut s, SECRET, Purpose::Store, 0).unwrap_err();
    assert!(matches!(err, HandshakeError::Io(_)), "{err:?}");
    exchange_works(ranks);
}

/// A directory that sends lookups of rank 1 to rank 2's listener.
#[derive(Debug)]
struct Misdirect(Arc<MemoryDirectory>);

impl PeerDirectory for Misdirect {
    fn publish(&self, rank: Rank, addr: SocketAddr) -> Result<(), String> {
        self.0.publish(rank, addr)
    }
    fn lookup(&self, rank: Rank, deadline: Instant) -> Result<SocketAddr, String> {
        self.0.lookup(if rank == 1 { 2 } else { rank }, deadline)
    }
}

#[test]
fn a_dialer_refuses_a_listener_that_is_not_the_rank_it_wanted() {
    let dir = Arc::new(Misdirect(MemoryDirectory::new()));
    let ranks: Vec<_> = (0..3)
        .map(|r| TcpTransport::new(TcpConfig::new(r, 3, SECRET.to_vec()), dir.clone()).unwrap())
        .collect();
    let err = ranks[0]
        .send(
            1,
            Tag::new(1, 0),
            b"hi",
            deadline_after(Duration::from_secs(10)),
        )
        .unwrap_err();
    assert!(
        matches!(err, TransportError::AuthFailed { peer: Some(1), .. }),
        "{err:?}"
    );
}

#[test]
fn a_job_with_another_secret_cannot_connect() {
    let dir = MemoryDirectory::new();
    let a = TcpTransport::new(TcpConfig::new(0, 2, SECRET.to_vec()), dir.clone()).unwrap();
    let _b = TcpTransport::new(TcpConfig::new(1, 2, b"another job".to_vec()), dir.clone()).unwrap();
    let err = a
        .send(
            1,
            Tag::new(1, 0),
            b"hi",
            deadline_after(Duration::from_secs(10)),
        )
        .unwrap_err();
    assert!(
        matches!(err, TransportError::AuthFailed { peer: Some(1), .. }),
        "{err:?}"
    );
}
