//! kill -9 of one rank, mid-loop or before it ever talked to anyone: the survivors fail fast
//! (no hang), naming the dead rank, and horovodrun names it.

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
    let (rest, status, stderr) = drain(&mut child, lines);
    let elapsed = killed_at.elapsed();
    assert!(
        !status.success(),
        "launcher exited 0 after a rank was killed"
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "took {elapsed:?} to fail"
    );
    // The launcher names the killed rank first, although the survivors fail within
    // milliseconds of it and their exits may reach the launcher before the kill's.
    let verdict = stderr
        .lines()
        .find(|l| l.starts_with("horovodrun: "))
        .unwrap_or_default();
    assert!(
        verdict.starts_with(&format!(
            "horovodrun: rank 2 (pid {victim}) was killed by signal 9 (SIGKILL)"
        )),
        "launcher did not name rank 2 first:\n{stderr}"
    );
    // A rank killed by a signal makes the launcher exit 1 (not a survivor's error code).
    assert_eq!(status.code(), Some(1), "{stderr}");
    // Survivors reported an error (rather than being killed while hung).
    for rank in [0, 1] {
        assert!(
            stderr.contains(&format!("rank {rank}: loop FAILED")),
            "rank {rank} did not report a failure:\nstderr:\n{stderr}\nstdout tail:\n{:?}",
            rest.iter().rev().take(5).collect::<Vec<_>>()
        );
    }
}

/// A rank killed right after init, before it sent anything to anyone, while the others start
/// an allreduce over TCP (where connections are otherwise made on first use): every survivor
/// must fail within seconds naming it, long before the op timeout and the launcher's grace
/// period.
#[test]
fn rank_killed_before_first_contact_fails_survivors_naming_it_over_tcp() {
    // Control messages and the ring on TCP (on one host they would take shared memory).
    early_death_job("0");
}

/// The same on one host's default path, where control messages take shared memory.
#[test]
fn rank_killed_before_first_contact_fails_survivors_naming_it_over_shared_memory() {
    early_death_job("1");
}

/// `horovodrun -np 3 hora-rank early-death` with rank 2 dying at once; checks the survivors.
fn early_death_job(shm: &str) {
    let job = run_with_rank_2_dying(3, "early-death", shm);
    for rank in [0, 1] {
        let error = job.error_of(rank);
        assert!(
            error.contains("rank 2"),
            "rank {rank}'s error does not name the dead rank 2: {error}\n{}",
            job.report
        );
    }
    job.assert_prompt();
}

/// Without the engine, over TCP: rank 2 of 4 is killed right after connecting, and rank 3's
/// first ring step waits to receive from it (its send to rank 0 fits in the socket buffers).
/// No connection ever joined ranks 2 and 3, so nothing hangs up on rank 3: it must find out
/// by itself and name rank 2, within seconds. The other survivors only have to fail (without
/// the engine nobody spreads the root cause, so they may name whichever neighbour failed).
#[test]
fn ring_receive_from_a_rank_killed_before_first_contact_names_it() {
    let job = run_with_rank_2_dying(4, "ring-early-death", "0");
    let error = job.error_of(3);
    assert!(
        error.contains("connection to rank 2 lost"),
        "rank 3's error does not name the dead rank 2: {error}\n{}",
        job.report
    );
    for rank in [0, 1] {
        job.error_of(rank);
    }
    job.assert_prompt();
}

/// What the survivors of [`run_with_rank_2_dying`] said.
struct EarlyDeath {
    scenario: String,
    stderr: String,
    /// From rank 2's "dies now" to the launcher's exit.
    elapsed: Duration,
    report: String,
}

impl EarlyDeath {
    /// The error `rank` reported about itself (fails the test if it reported none).
    fn error_of(&self, rank: usize) -> &str {
        let prefix = format!("rank {rank}: {} FAILED: ", self.scenario);
        let Some(line) = self.stderr.lines().find(|l| l.contains(&prefix)) else {
            panic!(
                "rank {rank} did not report a failure of its own after {:?}:\n{}",
                self.elapsed, self.report
            );
        };
        line.split_once(&prefix).unwrap().1
    }

    fn assert_prompt(&self) {
        assert!(
            self.elapsed < Duration::from_secs(20),
            "took {:?} to fail (op timeout 120 s)\n{}",
            self.elapsed,
            self.report
        );
    }
}

/// `horovodrun -np <np> hora-rank <scenario>` with `HORA_RANK_DIE=2` and an op timeout of
/// 120 s; returns once the launcher exits.
fn run_with_rank_2_dying(np: usize, scenario: &str, shm: &str) -> EarlyDeath {
    let mut child = Command::new(horovodrun())
        // The launcher would SIGTERM the survivors 5 s after the death; give them time to fail
        // (or hang) on their own.
        .args(["--grace-period", "45", "-np", &np.to_string()])
        .arg(hora_rank())
        .arg(scenario)
        .env("HORA_RANK_DIE", "2")
        .env("HOROVOD_SHM", shm)
        .env("HORA_OP_TIMEOUT_SECONDS", "120")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn horovodrun");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let died_at = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("job ended before rank 2 died: {seen:?}");
        };
        if line.contains("rank 2 dies now") {
            break Instant::now();
        }
        seen.push(line);
    };
    let (rest, status, stderr) = drain(&mut child, lines);
    let elapsed = died_at.elapsed();
    let report = format!("stderr:\n{stderr}\nstdout:\n{seen:?}\n{rest:?}");
    // The survivors fail within milliseconds of the death, so the launcher may hear of one
    // of them first; it must still name the killed rank first, and exit 1 for it.
    let verdict = stderr
        .lines()
        .find(|l| l.starts_with("horovodrun: "))
        .unwrap_or_default();
    assert!(
        verdict.starts_with("horovodrun: rank 2 (pid ")
            && verdict.contains(" was killed by signal 9 (SIGKILL)"),
        "launcher did not name rank 2 first\n{report}"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "launcher's exit code after a rank was killed\n{report}"
    );
    EarlyDeath {
        scenario: scenario.to_string(),
        stderr,
        elapsed,
        report,
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

/// Reads the launcher's remaining stdout lines, waits for it, and reads its stderr.
fn drain(
    child: &mut std::process::Child,
    lines: impl Iterator<Item = std::io::Result<String>>,
) -> (Vec<String>, std::process::ExitStatus, String) {
    use std::io::Read;
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (rest, status, stderr)
}
