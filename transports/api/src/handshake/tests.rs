use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use super::*;

fn pair(
    server_secret: &'static [u8],
    client_secret: &'static [u8],
) -> (Result<u64, HandshakeError>, Result<u64, HandshakeError>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let srv = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        server(&mut s, server_secret, Purpose::Peer, 0)
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let cr = client(&mut c, client_secret, Purpose::Peer, 7);
    drop(c);
    (srv.join().unwrap(), cr)
}

#[test]
fn same_secret_agrees_on_ids() {
    let (s, c) = pair(b"job-secret", b"job-secret");
    assert_eq!(s.unwrap(), 7);
    assert_eq!(c.unwrap(), 0);
}

#[test]
fn wrong_secret_is_rejected_by_both_sides() {
    let (s, c) = pair(b"job-secret", b"guess");
    assert!(matches!(c, Err(HandshakeError::BadProof)), "client: {c:?}");
    // The client stops before proving anything, so the server sees the connection drop.
    assert!(s.is_err(), "server accepted a stranger: {s:?}");
}

#[test]
fn garbage_is_not_a_hello() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let srv = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        server(&mut s, b"k", Purpose::Peer, 0)
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n\r\n\r\n\r\n\r\n")
        .unwrap();
    assert!(matches!(
        srv.join().unwrap(),
        Err(HandshakeError::BadHello(_))
    ));
}

#[test]
fn purpose_is_bound_into_the_proof() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let srv = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        server(&mut s, b"k", Purpose::Store, 0)
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let cr = client(&mut c, b"k", Purpose::Peer, 1);
    assert!(cr.is_err());
    assert!(matches!(
        srv.join().unwrap(),
        Err(HandshakeError::BadHello(_))
    ));
}
