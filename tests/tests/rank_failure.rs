//! kill -9 of one rank mid-loop: the survivors fail fast (no hang) and horovodrun names it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hora_tests::{hora_rank, horovodrun};

#[test]
fn killed_rank_fails_survivors_and_launcher_names_it() {
    let mut child = Command::new(horovodrun())
        .args(["-np", "3"])
        .arg(hora_rank())
        .args(["loop", "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn horovodrun");
    // Wait until the loop runs on rank 2, then find its pid via /proc (child of horovodrun).
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let start = Instant::now();
    loop {
        let line = lines.next().expect("job ended early").unwrap();
        if line.contains("rank 2 step 10") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "loop never started"
        );
    }
    let victim = find_rank_pid(child.id(), "2").expect("rank 2's pid");
    let killed_at = Instant::now();
    // SAFETY-free: plain `kill` command.
    Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let elapsed = killed_at.elapsed();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        !status.success(),
        "launcher exited 0 after a rank was killed"
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "took {elapsed:?} to fail"
    );
    assert!(
        stderr.contains("rank 2") && stderr.contains("signal 9"),
        "launcher did not name rank 2:\n{stderr}"
    );
    // Survivors reported an error (rather than being killed while hung).
    for rank in [0, 1] {
        assert!(
            stderr.contains(&format!("rank {rank}: loop FAILED")),
            "rank {rank} did not report a failure:\nstderr:\n{stderr}\nstdout tail:\n{:?}",
            rest.iter().rev().take(5).collect::<Vec<_>>()
        );
    }
}

/// Finds the pid of the descendant of `launcher` whose environment has HOROVOD_RANK=`rank`.
fn find_rank_pid(launcher: u32, rank: &str) -> Option<u32> {
    let want = format!("HOROVOD_RANK={rank}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid: u32 = stat
            .rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        if ppid != launcher {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|kv| kv == want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}
