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

#[test]
fn asctime_is_pythons_layout() {
    // 1_700_000_000 is 2023-11-14 22:13:20 UTC; wherever the machine's zone is, the layout
    // is `Www Mmm dd hh:mm:ss yyyy`, 24 characters.
    let s = asctime_of(1_700_000_000);
    assert_eq!(s.len(), 24, "{s}");
    let f: Vec<&str> = s.split_whitespace().collect();
    assert_eq!(f.len(), 5, "{s}");
    assert!(f[3].len() == 8 && f[3].matches(':').count() == 2, "{s}");
    assert!(s.ends_with(" 2023"), "{s}");
    // A single-digit day is padded with a space, as asctime does (Nov 2 or 3 in any zone).
    let early = asctime_of(1_700_000_000 - 12 * 86_400);
    assert_eq!(early.len(), 24, "{early}");
    assert_eq!(&early[8..9], " ", "{early}");
    // date(1) in the same zone is the oracle: `%a %b %e %T %Y` is asctime's layout.
    for (t, got) in [(1_700_000_000, &s), (1_700_000_000 - 12 * 86_400, &early)] {
        if let Ok(out) = Command::new("date")
            .arg("-d")
            .arg(format!("@{t}"))
            .arg("+%a %b %e %H:%M:%S %Y")
            .env("LC_ALL", "C")
            .output()
        {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim_end(),
                got.as_str()
            );
        }
    }
}
