//! End-to-end tests of the `horovodrun` binary with `sh` as the rank program.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hora::rendezvous::{LAUNCHER_ID, Store, StoreClient};

const BIN: &str = env!("CARGO_BIN_EXE_horovodrun");
/// No test here should come near this; it only keeps a broken launcher from hanging the suite.
const WATCHDOG: Duration = Duration::from_secs(25);

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env_remove("HOROVOD_SECRET_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(mut child: Child, start: Instant) -> Run {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > WATCHDOG {
            let _ = child.kill();
            panic!("horovodrun did not exit within {WATCHDOG:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    Run {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
        took,
    }
}

fn run(args: &[&str]) -> Run {
    let start = Instant::now();
    finish(spawn(args), start)
}

/// A fresh scratch directory for one test.
fn scratch() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "horovodrun-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// True once `pid` is gone (or a zombie nobody has reaped yet: it runs no code).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

fn read_pids(dir: &Path, prefix: &str, n: usize) -> Vec<u32> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<u32> = (0..n)
            .filter_map(|r| std::fs::read_to_string(dir.join(format!("{prefix}.{r}"))).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        if pids.len() == n {
            return pids;
        }
        assert!(
            Instant::now() < until,
            "ranks did not write their pid files"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn assert_all_dead(pids: &[u32]) {
    let until = Instant::now() + Duration::from_secs(2);
    while !pids.iter().all(|&p| dead(p)) {
        assert!(
            Instant::now() < until,
            "left running: {:?}",
            pids.iter().filter(|&&p| !dead(p)).collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn send_signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid} failed");
}

#[test]
fn each_rank_gets_its_placement_in_the_environment() {
    let r = run(&[
        "-np",
        "3",
        "-H",
        "localhost:2,127.0.0.1:1",
        "sh",
        "-c",
        "echo $HOROVOD_RANK $HOROVOD_SIZE $HOROVOD_LOCAL_RANK $HOROVOD_LOCAL_SIZE \
         $HOROVOD_CROSS_RANK $HOROVOD_CROSS_SIZE $HOROVOD_HOSTNAME $HORA_STORE_ADDR",
    ]);
    assert!(r.status.success(), "{}", r.stderr);
    let mut store = None;
    for rank in 0..3 {
        let prefix = format!("[{rank}]<stdout>:");
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| {
                panic!("no output from rank {rank}: {}", r.stdout);
            });
        let fields: Vec<&str> = line[prefix.len()..].split(' ').collect();
        let want = [
            rank.to_string(),
            "3".into(),
            rank.to_string(),
            "3".into(),
            "0".into(),
            "1".into(),
        ];
        assert_eq!(fields[..6], want, "{line}");
        assert_eq!(fields[6], "127.0.0.1");
        let addr: std::net::SocketAddr = fields[7].parse().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        // Every rank is told the same store.
        assert_eq!(*store.get_or_insert(addr), addr);
    }
    assert_eq!(r.stdout.lines().count(), 3);
}

#[test]
fn hierarchical_flags_reach_every_rank() {
    let show = "echo \"[$HOROVOD_HIERARCHICAL_ALLREDUCE/$HOROVOD_HIERARCHICAL_ALLGATHER]\"";
    let r = run(&["-np", "2", "--hierarchical-allreduce", "sh", "-c", show]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(r.stdout.matches("[1/]").count(), 2, "{}", r.stdout);
    let r = run(&[
        "-np",
        "2",
        "--hierarchical-allreduce",
        "--hierarchical-allgather",
        "sh",
        "-c",
        show,
    ]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(r.stdout.matches("[1/1]").count(), 2, "{}", r.stdout);
    // Without the flags the ranks get nothing and choose for themselves.
    let r = run(&["-np", "2", "sh", "-c", show]);
    assert_eq!(r.stdout.matches("[/]").count(), 2, "{}", r.stdout);
}

#[test]
fn output_lines_are_prefixed_and_never_interleaved() {
    let r = run(&[
        "-np",
        "4",
        "sh",
        "-c",
        "i=0; while [ $i -lt 200 ]; do echo \"$HOROVOD_RANK-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"; \
         i=$((i+1)); done; echo \"oops $HOROVOD_RANK\" >&2; printf 'no newline'",
    ]);
    assert!(r.status.success(), "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4 * 201);
    let mut next = [0u32; 4];
    for l in &lines {
        let (rank, rest) = l
            .strip_prefix('[')
            .and_then(|l| l.split_once("]<stdout>:"))
            .unwrap_or_else(|| panic!("unprefixed line {l:?}"));
        let rank: usize = rank.parse().unwrap();
        if rest == "no newline" {
            assert_eq!(next[rank], 200, "partial line printed early");
            continue;
        }
        // Each rank's lines arrive whole and in order.
        let want = format!("{rank}-{}-{}", next[rank], "x".repeat(56));
        assert_eq!(rest, want);
        next[rank] += 1;
    }
    assert_eq!(next, [200; 4]);
    for rank in 0..4 {
        assert!(
            r.stderr
                .contains(&format!("[{rank}]<stderr>:oops {rank}\n")),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn secret_is_in_the_environment_only() {
    let dir = scratch();
    let script = format!(
        "printf %s \"$HOROVOD_SECRET_KEY\" > {d}/secret.$HOROVOD_RANK; \
         echo self: $(tr '\\0' ' ' < /proc/$$/cmdline); echo launcher: $(tr '\\0' ' ' < /proc/$PPID/cmdline)",
        d = dir.display()
    );
    let r = run(&["-np", "2", "--verbose", "sh", "-c", &script]);
    assert!(r.status.success(), "{}", r.stderr);
    let s0 = std::fs::read_to_string(dir.join("secret.0")).unwrap();
    let s1 = std::fs::read_to_string(dir.join("secret.1")).unwrap();
    assert_eq!(s0, s1, "ranks got different secrets");
    assert_eq!(s0.len(), 64);
    assert!(s0.bytes().all(|b| b.is_ascii_hexdigit()));
    // The children printed their own and the launcher's command lines.
    assert!(r.stdout.contains("self: sh -c"), "{}", r.stdout);
    assert!(
        r.stdout.contains("launcher: ") && r.stdout.contains("--verbose"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains(&s0),
        "secret printed on stdout or in a command line"
    );
    assert!(
        !r.stderr.contains(&s0),
        "secret printed on stderr: {}",
        r.stderr
    );
    // Verbose mode did log something, so the check above looked at real log output.
    assert!(
        r.stderr.contains("rendezvous store listening"),
        "{}",
        r.stderr
    );

    // A second job makes a new secret.
    let r2 = run(&["-np", "1", "sh", "-c", &script]);
    assert!(r2.status.success());
    assert_ne!(std::fs::read_to_string(dir.join("secret.0")).unwrap(), s0);
}

#[test]
fn secret_from_the_environment_is_used_as_is() {
    let dir = scratch();
    let key = "00112233445566778899aabbccddeeff00112233";
    let out = Command::new(BIN)
        .args(["-np", "1", "sh", "-c"])
        .arg(format!(
            "printf %s \"$HOROVOD_SECRET_KEY\" > {}/secret",
            dir.display()
        ))
        .env("HOROVOD_SECRET_KEY", key)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(dir.join("secret")).unwrap(), key);

    let out = Command::new(BIN)
        .args(["-np", "1", "true"])
        .env("HOROVOD_SECRET_KEY", "not-hex-at-all")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HOROVOD_SECRET_KEY") && !err.contains("not-hex-at-all"),
        "{err}"
    );
}

#[test]
fn ranks_reach_the_launchers_store_with_the_job_secret() {
    let dir = scratch();
    let d = dir.display();
    let script = format!(
        "echo $HORA_STORE_ADDR > {d}/addr.tmp && mv {d}/addr.tmp {d}/addr; \
         printf %s $HOROVOD_SECRET_KEY > {d}/key.tmp && mv {d}/key.tmp {d}/key; \
         while [ ! -e {d}/go ]; do sleep 0.02; done"
    );
    let start = Instant::now();
    let child = spawn(&["-np", "1", "sh", "-c", &script]);
    while !dir.join("key").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "rank did not start"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let addr = std::fs::read_to_string(dir.join("addr"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let key = hex::decode(std::fs::read_to_string(dir.join("key")).unwrap()).unwrap();
    let store = StoreClient::connect(addr, &key, LAUNCHER_ID, Duration::from_secs(5)).unwrap();
    store.set("rank/0", b"127.0.0.1:4000").unwrap();
    assert_eq!(store.add("ready", 1).unwrap(), 1);
    let again = StoreClient::connect(addr, &key, 0, Duration::from_secs(5)).unwrap();
    assert_eq!(
        again
            .get("rank/0", Instant::now() + Duration::from_secs(1))
            .unwrap(),
        b"127.0.0.1:4000"
    );
    // Without the secret the store refuses us.
    let wrong = StoreClient::connect(addr, &[7u8; 32], 0, Duration::from_secs(5));
    assert!(wrong.is_err());
    std::fs::write(dir.join("go"), b"").unwrap();
    let r = finish(child, start);
    assert!(r.status.success(), "{}", r.stderr);
    // The refusal was logged by the launcher, with the stranger's address.
    assert!(
        r.stderr.contains("authentication") && r.stderr.contains("127.0.0.1:"),
        "{}",
        r.stderr
    );
}

#[test]
fn failing_rank_stops_the_others_and_is_named() {
    let dir = scratch();
    let script = format!(
        "echo $$ > {d}/pid.$HOROVOD_RANK; \
         if [ $HOROVOD_RANK = 1 ]; then sleep 0.2; exit 3; fi; exec sleep 60",
        d = dir.display()
    );
    let r = run(&["-np", "4", "--grace-period", "0.5", "sh", "-c", &script]);
    assert_eq!(r.status.code(), Some(3), "{}", r.stderr);
    assert!(
        r.stderr.contains("horovodrun: rank 1 (pid ")
            && r.stderr
                .contains("exited with code 3; stopping the other 3 ranks"),
        "{}",
        r.stderr
    );
    assert!(r.took < Duration::from_secs(5), "took {:?}", r.took);
    assert_all_dead(&read_pids(&dir, "pid", 4));
}

#[test]
fn surviving_ranks_may_report_before_being_stopped() {
    // Rank 0 notices the failure on its own and explains it; the default grace period lets it.
    let script = "if [ $HOROVOD_RANK = 1 ]; then exit 3; fi; \
                  sleep 0.3; echo 'rank 0: peer 1 went away' >&2; exit 1";
    let r = run(&["-np", "2", "sh", "-c", script]);
    assert_eq!(
        r.status.code(),
        Some(3),
        "the first failure decides the exit code"
    );
    assert!(
        r.stderr.contains("[0]<stderr>:rank 0: peer 1 went away"),
        "{}",
        r.stderr
    );
    // Everyone left by themselves, so no grace period was waited out.
    assert!(r.took < Duration::from_secs(3), "took {:?}", r.took);
}

#[test]
fn rank_killed_by_a_signal_is_named_with_the_signal() {
    let script = "if [ $HOROVOD_RANK = 1 ]; then kill -9 $$; fi; exec sleep 60";
    let r = run(&["-np", "3", "--grace-period", "0.2", "sh", "-c", script]);
    assert!(!r.status.success());
    assert!(
        r.stderr.contains("rank 1 (pid ")
            && r.stderr
                .contains("was killed by signal 9 (SIGKILL); stopping the other 2 ranks"),
        "{}",
        r.stderr
    );
    assert!(r.took < Duration::from_secs(5), "took {:?}", r.took);
}

#[test]
fn ranks_that_ignore_sigterm_are_killed() {
    let dir = scratch();
    let script = format!(
        "trap '' TERM; echo $$ > {d}/pid.$HOROVOD_RANK; \
         if [ $HOROVOD_RANK = 0 ]; then while [ ! -s {d}/pid.1 ]; do sleep 0.01; done; exit 1; fi; \
         while :; do sleep 0.05; done",
        d = dir.display()
    );
    let r = run(&["-np", "2", "--grace-period", "0", "sh", "-c", &script]);
    assert_eq!(r.status.code(), Some(1));
    // SIGTERM is ignored, so SIGKILL comes 2 s later.
    assert!(
        r.took >= Duration::from_millis(1500) && r.took < Duration::from_secs(6),
        "{:?}",
        r.took
    );
    assert_all_dead(&read_pids(&dir, "pid", 2));
}

fn interrupt_test(sig: &str, code: i32) {
    let dir = scratch();
    // A background child in a non-interactive shell ignores SIGINT: only the launcher's
    // clean-up of the whole process group gets rid of it.
    let script = format!(
        "sleep 60 & echo $! > {d}/sleep.$HOROVOD_RANK; wait",
        d = dir.display()
    );
    let start = Instant::now();
    let child = spawn(&["-np", "3", "sh", "-c", &script]);
    let launcher = child.id();
    let sleeps = read_pids(&dir, "sleep", 3);
    send_signal(launcher, sig);
    let r = finish(child, start);
    assert_eq!(r.status.code(), Some(code), "{}", r.stderr);
    assert!(r.stderr.contains("stopping 3 ranks"), "{}", r.stderr);
    assert_all_dead(&sleeps);
}

#[test]
fn sigint_stops_every_rank_and_their_children() {
    interrupt_test("-INT", 130);
}

#[test]
fn sigterm_stops_every_rank_and_their_children() {
    interrupt_test("-TERM", 143);
}

#[test]
fn ranks_die_with_a_killed_launcher() {
    let dir = scratch();
    let script = format!(
        "echo $$ > {d}/pid.$HOROVOD_RANK; exec sleep 60",
        d = dir.display()
    );
    let start = Instant::now();
    let child = spawn(&["-np", "2", "sh", "-c", &script]);
    let launcher = child.id();
    let ranks = read_pids(&dir, "pid", 2);
    send_signal(launcher, "-KILL");
    let r = finish(child, start);
    assert_eq!(r.status.code(), None, "the launcher was not killed");
    assert_all_dead(&ranks);
}

#[test]
fn healthy_job_waits_for_slow_ranks() {
    let script = "if [ $HOROVOD_RANK = 1 ]; then sleep 0.5; echo done; fi";
    let r = run(&["-np", "2", "--grace-period", "0", "sh", "-c", script]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(r.stdout.contains("[1]<stdout>:done"), "{}", r.stdout);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn usage_errors_exit_2_with_a_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus", "-np", "2", "true"], "--bogus"),
        (&["-np", "0", "true"], "0"),
        (&["-np", "2"], "COMMAND"),
        (&["true"], "-np N is required"),
        (
            &["-np", "3", "--mpi", "-H", "localhost:2", "true"],
            "2 slots",
        ),
        (&["-np", "2", "--frobnicate", "true"], "--frobnicate"),
        (
            &["-np", "2", "--hostfile", "/nonexistent/hf", "true"],
            "cannot read --hostfile",
        ),
        (&["-np", "3", "-H", "localhost:2", "true"], "2 slots"),
        (&["-np", "2", "-H", "localhost:zero", "true"], "slot count"),
    ];
    for (args, needle) in cases {
        let r = run(args);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
    }
}

#[test]
fn missing_program_is_reported() {
    let r = run(&["-np", "2", "/nonexistent/program"]);
    assert_eq!(r.status.code(), Some(127));
    assert!(r.stderr.contains("cannot start rank 0"), "{}", r.stderr);
}

#[test]
fn malformed_hostfile_lines_are_named() {
    let dir = scratch();
    let hf = dir.join("hosts");
    std::fs::write(&hf, "# two hosts\nlocalhost slots=2\n\nnode9 slots=two\n").unwrap();
    let r = run(&["-np", "2", "--hostfile", hf.to_str().unwrap(), "true"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{}:4: `two` is not a positive slot count",
            hf.display()
        )),
        "{}",
        r.stderr
    );
    // A good hostfile of local slots runs the job.
    std::fs::write(&hf, "localhost slots=2 # here\n").unwrap();
    let r = run(&["-np", "2", "--hostfile", hf.to_str().unwrap(), "true"]);
    assert!(r.status.success(), "{}", r.stderr);
}

#[test]
fn unreachable_hosts_are_reported_before_any_rank_starts() {
    let dir = scratch();
    // 192.0.2.0/24 is TEST-NET-1: never routed, so ssh cannot reach it.
    let r = run(&[
        "-np",
        "2",
        "-H",
        "localhost:1,192.0.2.1:1",
        "--start-timeout",
        "2",
        "sh",
        "-c",
        &format!("touch {}/ran", dir.display()),
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("192.0.2.1") && r.stderr.contains("no rank was started"),
        "{}",
        r.stderr
    );
    assert!(!dir.join("ran").exists(), "a rank started");
    assert!(r.took < Duration::from_secs(10), "took {:?}", r.took);
}

#[test]
fn flags_reach_the_ranks_and_output_files_are_written() {
    let dir = scratch();
    let out = dir.join("logs");
    let r = run(&[
        "-np",
        "2",
        "-x",
        "FOO=bar baz",
        "--disable-cache",
        "--fusion-threshold-mb",
        "2",
        "--cycle-time-ms",
        "3",
        "--log-level",
        "debug",
        "--output-filename",
        out.to_str().unwrap(),
        "sh",
        "-c",
        "echo $FOO/$HOROVOD_CACHE_CAPACITY/$HOROVOD_FUSION_THRESHOLD/$HOROVOD_CYCLE_TIME/$HOROVOD_LOG_LEVEL; echo e$HOROVOD_RANK >&2",
    ]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(
        // --disable-cache is Horovod's (no cached start-up checks): the response cache stays.
        r.stdout.contains("[1]<stdout>:bar baz//2097152/3/DEBUG"),
        "{}",
        r.stdout
    );
    for rank in 0..2 {
        let d = out.join(format!("rank.{rank}"));
        assert_eq!(
            std::fs::read_to_string(d.join("stdout")).unwrap(),
            "bar baz//2097152/3/DEBUG\n"
        );
        assert_eq!(
            std::fs::read_to_string(d.join("stderr")).unwrap(),
            format!("e{rank}\n")
        );
    }
}

#[test]
fn check_build_lists_transports() {
    let r = run(&["--check-build"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(
        r.stdout.contains("[X] TCP ring") && r.stdout.contains("[ ] MPI"),
        "{}",
        r.stdout
    );
}

#[test]
fn help_groups_the_flags() {
    let r = run(&["--help"]);
    assert!(r.status.success());
    for h in [
        "Placement:",
        "Remote hosts (ssh):",
        "Tuning:",
        "--hostfile",
        "--network-interface",
    ] {
        assert!(r.stdout.contains(h), "{h}: {}", r.stdout);
    }
}

#[test]
fn version_is_printed() {
    let r = run(&["--version"]);
    assert!(r.status.success());
    assert!(r.stdout.starts_with("horovodrun "), "{}", r.stdout);
}
