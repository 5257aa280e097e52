//! Process-level failure: `kill -9` of one rank in the middle of allreduces makes the other
//! ranks fail fast with an error naming it, and leaves nothing behind (no /dev/shm files, no
//! abstract sockets).
//!
//! The ranks are this test binary run again with `HORA_SHM_KILL9_RANK` set, entering
//! [`worker`] (a no-op in a normal run).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hora_shm::{ShmConfig, ShmGroup};
use hora_transport::{DataType, ReduceOp, deadline_after};

const N: usize = 3;
const VICTIM: usize = 1;

/// One rank: connect, say "ready", then allreduce until something fails.
#[test]
fn worker() {
    let Ok(rank) = std::env::var("HORA_SHM_KILL9_RANK") else {
        return;
    };
    let rank: usize = rank.parse().unwrap();
    let job = std::env::var("HORA_SHM_KILL9_JOB").unwrap();
    let g = ShmGroup::connect(&ShmConfig::new(rank, N, job)).expect("connect");
    let mut buf = vec![1u8; 1 << 20];
    g.allreduce(
        &mut buf,
        DataType::U8,
        ReduceOp::Sum,
        deadline_after(Duration::from_secs(30)),
    )
    .expect("first allreduce");
    println!("HORA-SHM-READY");
    loop {
        if let Err(e) = g.allreduce(
            &mut buf,
            DataType::U8,
            ReduceOp::Sum,
            deadline_after(Duration::from_secs(120)),
        ) {
            println!("failed: {e}");
            std::process::exit(3);
        }
    }
}

/// Kills every rank still running when the test ends, pass or fail.
struct Ranks(Vec<Child>);

impl Drop for Ranks {
    fn drop(&mut self) {
        for k in &mut self.0 {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}

fn dev_shm() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kill_9_of_a_rank_fails_its_peers_fast_and_leaks_nothing() {
    let before = dev_shm();
    let job = hora_shm::unique_job_name("hora-kill9");
    let exe = std::env::current_exe().unwrap();
    let mut kids = Ranks(
        (0..N)
            .map(|r| {
                Command::new(&exe)
                    .args(["--exact", "worker", "--nocapture", "--test-threads=1"])
                    .env("HORA_SHM_KILL9_RANK", r.to_string())
                    .env("HORA_SHM_KILL9_JOB", &job)
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let mut outs: Vec<_> = kids
        .0
        .iter_mut()
        .map(|k| BufReader::new(k.stdout.take().unwrap()))
        .collect();
    for (r, out) in outs.iter_mut().enumerate() {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "rank {r} exited before it was ready"
            );
            if line.contains("HORA-SHM-READY") {
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    kids.0[VICTIM].kill().unwrap(); // SIGKILL
    kids.0[VICTIM].wait().unwrap();
    let killed_at = Instant::now();
    for (r, (kid, out)) in kids.0.iter_mut().zip(outs).enumerate() {
        if r == VICTIM {
            continue;
        }
        let status = kid.wait().unwrap();
        let took = killed_at.elapsed();
        let text: String = out
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(status.code(), Some(3), "rank {r}: {text}");
        assert!(
            text.contains(&format!("rank {VICTIM}")),
            "rank {r} should name rank {VICTIM}: {text}"
        );
        assert!(
            took < Duration::from_secs(5),
            "rank {r} took {took:?} to notice"
        );
    }
    drop(kids);
    // Nothing named: no new /dev/shm files, and no abstract socket of this job is left.
    let after = dev_shm();
    let leaked: Vec<_> = after.iter().filter(|f| !before.contains(f)).collect();
    assert!(leaked.is_empty(), "left in /dev/shm: {leaked:?}");
    let sockets = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    assert!(
        !sockets.contains(&job),
        "abstract sockets of the job are left: {job}"
    );
}
