use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

#[test]
fn child_ended_peeks_without_reaping() {
    // `head -c1` runs until it gets a byte: we decide when it ends.
    let mut child = Command::new("head")
        .args(["-c", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(!child_ended(child.id()));
    child.stdin.take().unwrap().write_all(b"x").unwrap();
    let give_up = Instant::now() + Duration::from_secs(30);
    while !child_ended(child.id()) {
        assert!(Instant::now() < give_up, "child never seen ended");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Still ours to reap, with its status intact.
    assert!(child.wait().unwrap().success());
    // Reaped elsewhere (here, by us) still counts as ended.
    assert!(child_ended(child.id()));
    assert!(!child_ended(u32::MAX));
}
