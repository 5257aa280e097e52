use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hora_transport::handshake::{self, Purpose};

use super::*;

const SECRET: &[u8] = b"0123456789abcdef-the-job-secret!";
const T: Duration = Duration::from_secs(5);

fn server() -> StoreServer {
    StoreServer::start("127.0.0.1:0".parse().unwrap(), SECRET.to_vec()).unwrap()
}

fn client(addr: SocketAddr, id: u64) -> StoreClient {
    StoreClient::connect(addr, SECRET, id, T).unwrap()
}

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

/// An authenticated raw socket, for speaking the wire format by hand.
fn raw_authenticated(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    handshake::client(&mut s, SECRET, Purpose::Store, 9).unwrap();
    s
}

/// Reads until EOF or error; true if the server closed the connection.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

fn check_basic_semantics(store: &dyn Store) {
    store.set("a", b"1").unwrap();
    assert_eq!(store.get("a", soon(100)).unwrap(), b"1");
    store.set("a", b"two").unwrap();
    assert_eq!(store.get("a", soon(100)).unwrap(), b"two");
    store.set("empty", b"").unwrap();
    assert_eq!(store.get("empty", soon(100)).unwrap(), b"");
    assert_eq!(store.add("n", 5).unwrap(), 5);
    assert_eq!(store.add("n", -7).unwrap(), -2);
    assert_eq!(store.get("n", soon(100)).unwrap(), b"-2");
    assert!(matches!(store.add("a", 1), Err(StoreError::NotACounter { key }) if key == "a"));
    let e = store.get("missing-key", soon(50)).unwrap_err();
    assert!(
        matches!(&e, StoreError::Timeout { key, .. } if key == "missing-key"),
        "{e:?}"
    );
    assert!(e.to_string().contains("missing-key"), "{e}");
    // The store still works after a timeout.
    assert_eq!(store.add("n", 2).unwrap(), 0);
    let long = "k".repeat(MAX_KEY_LEN + 1);
    assert!(matches!(
        store.set(&long, b"x"),
        Err(StoreError::TooLarge { what: "key", len, .. }) if len == MAX_KEY_LEN + 1
    ));
    assert!(matches!(
        store.get(&long, soon(10)),
        Err(StoreError::TooLarge { .. })
    ));
    assert!(matches!(
        store.add(&long, 1),
        Err(StoreError::TooLarge { .. })
    ));
    let big = vec![0u8; MAX_VALUE_LEN + 1];
    assert!(matches!(
        store.set("big", &big),
        Err(StoreError::TooLarge { what: "value", .. })
    ));
    // Exactly at the limits is fine.
    let max_key = "m".repeat(MAX_KEY_LEN);
    store.set(&max_key, b"ok").unwrap();
    assert_eq!(store.get(&max_key, soon(100)).unwrap(), b"ok");
}

#[test]
fn memory_store_semantics() {
    check_basic_semantics(&MemoryStore::new());
}

#[test]
fn client_store_semantics() {
    let srv = server();
    let c = client(srv.addr(), 0);
    check_basic_semantics(&c);
    // Over-limit requests are refused locally, so the connection is still usable.
    c.set("after", b"limits").unwrap();
    assert_eq!(c.get("after", soon(100)).unwrap(), b"limits");
}

#[test]
fn large_value_round_trips() {
    let srv = server();
    let c = client(srv.addr(), 0);
    let v: Vec<u8> = (0..MAX_VALUE_LEN).map(|i| (i % 251) as u8).collect();
    c.set("blob", &v).unwrap();
    assert_eq!(client(srv.addr(), 1).get("blob", soon(5000)).unwrap(), v);
}

#[test]
fn many_connections_and_threads_agree() {
    let srv = server();
    let addr = srv.addr();
    let ranks = 8u64;
    let threads: Vec<_> = (0..ranks)
        .map(|r| {
            thread::spawn(move || {
                let c = client(addr, r);
                c.set(&format!("addr/{r}"), format!("host:{r}").as_bytes())
                    .unwrap();
                for _ in 0..50 {
                    c.add("arrivals", 1).unwrap();
                }
                // Every rank sees every other rank's address.
                for p in 0..ranks {
                    let v = c.get(&format!("addr/{p}"), soon(5000)).unwrap();
                    assert_eq!(v, format!("host:{p}").as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let c = client(addr, LAUNCHER_ID);
    assert_eq!(c.add("arrivals", 0).unwrap(), 50 * ranks as i64);
}

#[test]
fn one_client_shared_between_threads() {
    let srv = server();
    let c = Arc::new(client(srv.addr(), 0));
    let ts: Vec<_> = (0..4)
        .map(|_| {
            let c = Arc::clone(&c);
            thread::spawn(move || {
                for _ in 0..100 {
                    c.add("x", 1).unwrap();
                }
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    assert_eq!(c.add("x", 0).unwrap(), 400);
}

fn check_get_blocks_until_set(waiter: Arc<dyn Store>, setter: Arc<dyn Store>) {
    let start = Instant::now();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        setter.set("late", b"here").unwrap();
    });
    assert_eq!(waiter.get("late", soon(5000)).unwrap(), b"here");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "returned before the set: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "missed the wake-up: {waited:?}"
    );
    t.join().unwrap();
}

#[test]
fn get_blocks_until_set_memory() {
    let m = Arc::new(MemoryStore::new());
    check_get_blocks_until_set(m.clone(), m);
}

#[test]
fn get_blocks_until_set_over_tcp() {
    let srv = server();
    check_get_blocks_until_set(
        Arc::new(client(srv.addr(), 0)),
        Arc::new(client(srv.addr(), 1)),
    );
}

#[test]
fn get_timeout_names_the_key_and_takes_the_deadline() {
    let srv = server();
    let c = client(srv.addr(), 3);
    let start = Instant::now();
    let e = c.get("addr/7", soon(300)).unwrap_err();
    let waited = start.elapsed();
    match &e {
        StoreError::Timeout { key, after } => {
            assert_eq!(key, "addr/7");
            assert!(*after >= Duration::from_millis(250), "{after:?}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(e.to_string().contains("\"addr/7\""), "{e}");
    assert!(
        (Duration::from_millis(250)..Duration::from_secs(3)).contains(&waited),
        "{waited:?}"
    );
    // A past deadline still answers at once for existing keys.
    c.set("here", b"1").unwrap();
    assert_eq!(
        c.get("here", Instant::now() - Duration::from_secs(1))
            .unwrap(),
        b"1"
    );
}

/// Collects formatted events, so a test can see what the server logged.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", f.name(), v);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let mut s = e.metadata().level().to_string();
        e.record(&mut Fields(&mut s));
        self.0.lock().unwrap().push(s);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Capture {
    fn wait_for(&self, needle: &str) -> Vec<String> {
        let until = soon(5000);
        loop {
            let logs = self.0.lock().unwrap().clone();
            if logs.iter().any(|l| l.contains(needle)) || Instant::now() > until {
                return logs;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn wrong_secret_is_refused_and_logged() {
    let capture = Capture::default();
    let dispatch = tracing::Dispatch::new(capture.clone());
    let srv = tracing::dispatcher::with_default(&dispatch, server);
    let e = StoreClient::connect(srv.addr(), b"not-the-secret", 4, T).unwrap_err();
    assert!(
        matches!(&e, StoreError::Auth { addr, .. } if *addr == srv.addr()),
        "{e:?}"
    );
    assert!(e.to_string().contains("HOROVOD_SECRET_KEY"), "{e}");

    let logs = capture.wait_for("authentication");
    let refusal = logs
        .iter()
        .find(|l| l.starts_with("WARN") && l.contains("authentication"))
        .unwrap_or_else(|| panic!("no refusal logged: {logs:?}"));
    assert!(
        refusal.contains("peer=127.0.0.1:"),
        "log lacks the address: {refusal}"
    );
    let secret = String::from_utf8_lossy(SECRET);
    for l in &logs {
        assert!(
            !l.contains(&*secret) && !l.contains(&hex::encode(SECRET)),
            "secret logged: {l}"
        );
    }
    // The server keeps serving holders of the secret.
    client(srv.addr(), 0).set("still", b"up").unwrap();
}

#[test]
fn garbage_before_auth_is_dropped_and_server_keeps_serving() {
    let srv = server();
    let mut g = TcpStream::connect(srv.addr()).unwrap();
    g.set_read_timeout(Some(T)).unwrap();
    g.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(
        closed_by_server(&mut g),
        "the server kept talking to a stranger"
    );
    let c = client(srv.addr(), 0);
    c.set("k", b"v").unwrap();
    assert_eq!(c.get("k", soon(100)).unwrap(), b"v");
}

#[test]
fn garbage_after_auth_is_dropped_and_server_keeps_serving() {
    let srv = server();
    let mut s = raw_authenticated(srv.addr());
    s.write_all(&[0x99, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], wire::Status::BadRequest as u8);
    assert!(closed_by_server(&mut s));
    client(srv.addr(), 0).set("k", b"v").unwrap();
}

#[test]
fn oversize_lengths_on_the_wire_are_rejected_without_allocating() {
    let srv = server();
    // Key length claims 4 GiB - 1.
    let mut s = raw_authenticated(srv.addr());
    s.write_all(&[wire::OP_GET, 0xff, 0xff, 0xff, 0xff])
        .unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], wire::Status::TooLarge as u8);
    assert!(closed_by_server(&mut s));
    // Value length over 16 MiB.
    let mut s = raw_authenticated(srv.addr());
    let mut req = vec![wire::OP_SET, 1, 0, 0, 0, b'k'];
    req.extend_from_slice(&((MAX_VALUE_LEN as u32) + 1).to_le_bytes());
    s.write_all(&req).unwrap();
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], wire::Status::TooLarge as u8);
    let len = u32::from_le_bytes(head[1..5].try_into().unwrap()) as usize;
    let mut why = vec![0u8; len];
    s.read_exact(&mut why).unwrap();
    assert!(String::from_utf8_lossy(&why).contains("value"), "{why:?}");
    client(srv.addr(), 0).set("k", b"v").unwrap();
}

#[test]
fn silent_stranger_does_not_block_others() {
    let srv = server();
    let _silent = TcpStream::connect(srv.addr()).unwrap();
    let start = Instant::now();
    client(srv.addr(), 0).set("k", b"v").unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn shutdown_wakes_waiting_gets() {
    let srv = server();
    let c = client(srv.addr(), 0);
    let t = thread::spawn(move || c.get("never", soon(30_000)));
    thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    srv.shutdown();
    let r = t.join().unwrap();
    assert!(
        matches!(r, Err(StoreError::ShutDown | StoreError::Io { .. })),
        "{r:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn shutdown_refuses_new_clients() {
    let srv = server();
    let addr = srv.addr();
    srv.shutdown();
    assert!(StoreClient::connect(addr, SECRET, 0, Duration::from_millis(500)).is_err());
}

#[test]
fn empty_secret_is_refused_at_start() {
    assert!(StoreServer::start("127.0.0.1:0".parse().unwrap(), Vec::new()).is_err());
}

#[test]
fn wire_request_round_trip() {
    let cases = [
        (
            wire::encode_set("a", b"xyz"),
            wire::Request::Set {
                key: "a".into(),
                value: b"xyz".to_vec(),
            },
        ),
        (
            wire::encode_get("b/c", Duration::from_millis(1234)),
            wire::Request::Get {
                key: "b/c".into(),
                wait: Duration::from_millis(1234),
            },
        ),
        (
            wire::encode_add("n", -5),
            wire::Request::Add {
                key: "n".into(),
                delta: -5,
            },
        ),
    ];
    for (bytes, want) in cases {
        let got = wire::read_request(&mut &bytes[..]).unwrap().unwrap();
        assert_eq!(got, want);
        // Every strict prefix is an incomplete request, never a different valid one.
        for cut in 1..bytes.len() {
            assert!(
                wire::read_request(&mut &bytes[..cut]).is_err(),
                "prefix {cut} decoded"
            );
        }
    }
    assert!(wire::read_request(&mut &[][..]).unwrap().is_none());
}
