use std::thread;
use std::time::Duration;

use super::*;

#[test]
fn lookup_waits_for_a_later_publish() {
    let dir = MemoryDirectory::new();
    let addr: SocketAddr = "127.0.0.1:4242".parse().unwrap();
    let d = dir.clone();
    let publisher = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        d.publish(3, addr).unwrap();
    });
    let got = dir
        .lookup(3, Instant::now() + Duration::from_secs(10))
        .unwrap();
    assert_eq!(got, addr);
    publisher.join().unwrap();
}

#[test]
fn lookup_of_an_unpublished_rank_times_out() {
    let dir = MemoryDirectory::new();
    dir.publish(0, "127.0.0.1:1".parse().unwrap()).unwrap();
    let start = Instant::now();
    let err = dir
        .lookup(1, start + Duration::from_millis(100))
        .unwrap_err();
    assert!(err.contains("rank 1"), "{err}");
    assert!(start.elapsed() >= Duration::from_millis(90));
}
