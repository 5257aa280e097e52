//! End-to-end effects of Horovod's options on a real job (`sh` ranks): output files zero-padded
//! with and without `--mpi`, timestamped lines, the config file, refusals that start nothing,
//! and the timeouts that reach the ranks. The option table itself is a unit test
//! (src/cli/table_tests.rs).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_horovodrun");
/// Only keeps a broken launcher from hanging the suite.
const WATCHDOG: Duration = Duration::from_secs(60);

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn run_with(args: &[&str], env: &[(&str, &str)]) -> Run {
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("HOROVOD_SECRET_KEY")
        .env_remove("HOROVOD_GLOO_TIMEOUT_SECONDS")
        .env_remove("HOROVOD_START_TIMEOUT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
            let _ = child.wait();
            panic!("horovodrun did not exit within {WATCHDOG:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Run {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

fn run(args: &[&str]) -> Run {
    run_with(args, &[])
}

fn scratch() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "horovodrun-options-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The rank directories under `dir`, sorted as `ls` would.
fn rank_dirs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// `rank.00` … `rank.10`: zero-padded, so the names sort in rank order.
fn padded_11() -> Vec<String> {
    (0..11).map(|r| format!("rank.{r:02}")).collect()
}

#[test]
fn output_files_are_zero_padded_like_horovods() {
    let dir = scratch();
    let out = dir.join("logs");
    let r = run(&[
        "-np",
        "11",
        "--output-filename",
        out.to_str().unwrap(),
        "sh",
        "-c",
        "echo out$HOROVOD_RANK; echo err$HOROVOD_RANK >&2",
    ]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(rank_dirs(&out), padded_11());
    for rank in 0..11 {
        let d = out.join(format!("rank.{rank:02}"));
        assert_eq!(read(&d.join("stdout")), format!("out{rank}\n"));
        assert_eq!(read(&d.join("stderr")), format!("err{rank}\n"));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether `line` starts with Python's `time.asctime()` (`Tue Dec  8 10:11:12 2026`).
fn stamped(line: &str) -> Option<&str> {
    let (stamp, rest) = (line.get(..24)?, line.get(24..)?);
    let f: Vec<&str> = stamp.split_whitespace().collect();
    let ok = f.len() == 5
        && f[0].len() == 3
        && f[1].len() == 3
        && f[2].parse::<u32>().is_ok_and(|d| (1..=31).contains(&d))
        && f[3].len() == 8
        && f[3]
            .split(':')
            .all(|n| n.len() == 2 && n.parse::<u32>().is_ok())
        && f[4].parse::<u32>().is_ok();
    ok.then_some(rest)
}

#[test]
fn prefix_timestamp_stamps_every_line_as_horovod_does() {
    for flag in ["-prefix-timestamp", "--prefix-output-with-timestamp"] {
        let r = run(&["-np", "2", flag, "sh", "-c", "echo hi; echo oops >&2"]);
        assert!(r.status.success(), "{}", r.stderr);
        for rank in 0..2 {
            for (text, want) in [
                (&r.stdout, format!("[{rank}]<stdout>:hi")),
                (&r.stderr, format!("[{rank}]<stderr>:oops")),
            ] {
                assert!(
                    text.lines().any(|l| stamped(l) == Some(want.as_str())),
                    "{flag}: {want}\n{text}"
                );
            }
        }
    }
    assert_eq!(stamped("[0]<stdout>:hi"), None);
}

#[test]
fn config_file_reaches_the_ranks_and_the_command_line_wins() {
    let dir = scratch();
    let cfg = dir.join("horovod.yaml");
    std::fs::write(
        &cfg,
        "# Horovod's layout\nparams:\n  fusion_threshold_mb: 32\n  cache_capacity: 2048\n\
         stall_check:\n  enabled: false\nlogging:\n  level: DEBUG\n",
    )
    .unwrap();
    let r = run(&[
        "-np",
        "1",
        "--cache-capacity",
        "7",
        "--config-file",
        cfg.to_str().unwrap(),
        "sh",
        "-c",
        "echo $HOROVOD_FUSION_THRESHOLD/$HOROVOD_CACHE_CAPACITY/$HOROVOD_STALL_CHECK_DISABLE/$HOROVOD_LOG_LEVEL",
    ]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(
        r.stdout.contains("[0]<stdout>:33554432/7/1/DEBUG"),
        "{}",
        r.stdout
    );
    // The autotune section reaches the ranks as Horovod's variables.
    std::fs::write(&cfg, "autotune:\n  enabled: true\n  steps_per_sample: 7\n").unwrap();
    let r = run(&[
        "-np",
        "1",
        "--config-file",
        cfg.to_str().unwrap(),
        "sh",
        "-c",
        "echo $HOROVOD_AUTOTUNE/$HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE",
    ]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(r.stdout.contains("[0]<stdout>:1/7"), "{}", r.stdout);
    // A setting hora refuses, given in the file, is named by its key; nothing starts.
    std::fs::write(&cfg, "library_options:\n  thread_affinity: 1\n").unwrap();
    let marker = dir.join("ran");
    let touch = format!("touch {}", marker.display());
    let r = run(&[
        "-np",
        "1",
        "--config-file",
        cfg.to_str().unwrap(),
        "sh",
        "-c",
        &touch,
    ]);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("`library_options.thread_affinity` in --config-file")
            && r.stderr.contains("does not pin"),
        "{}",
        r.stderr
    );
    assert!(!marker.exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn refused_options_exit_2_with_the_reason_and_start_nothing() {
    let dir = scratch();
    let marker = dir.join("ran");
    let touch = format!("touch {}", marker.display());
    for (flags, words) in [
        (
            &["--min-np", "1"][..],
            "--min-np: elastic training is not built",
        ),
        (
            &["--num-nccl-streams", "2"],
            "--num-nccl-streams: hora has no GPU/NCCL",
        ),
        (
            &["--thread-affinity", "0"],
            "--thread-affinity: hora does not pin",
        ),
        (
            &["--mpi-threads-disable"],
            "--mpi-threads-disable: hora's MPI transport needs",
        ),
        (
            &["--torus-allreduce"],
            "--torus-allreduce: hora has no GPU/NCCL",
        ),
        (
            &["--binding-args", "--bind-to core"],
            "--binding-args: process binding is mpirun's",
        ),
    ] {
        let mut args = vec!["-np", "1"];
        args.extend_from_slice(flags);
        args.extend(["sh", "-c", &touch]);
        let r = run(&args);
        assert_eq!(r.status.code(), Some(2), "{flags:?}: {}", r.stderr);
        assert!(r.stderr.contains(words), "{flags:?}: {}", r.stderr);
        assert!(!marker.exists(), "{flags:?} started a rank");
    }
    // --jsrun, with no jsrun on PATH.
    let r = run_with(
        &["-np", "1", "--jsrun", "sh", "-c", &touch],
        &[("PATH", "/usr/bin:/bin")],
    );
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("--jsrun: jsrun is not on PATH"),
        "{}",
        r.stderr
    );
    assert!(!marker.exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn timeouts_reach_the_ranks_from_flags_and_environment() {
    let show = "echo $HOROVOD_START_TIMEOUT/$HOROVOD_GLOO_TIMEOUT_SECONDS";
    // HOROVOD_START_TIMEOUT is the default of --start-timeout, as in Horovod.
    let r = run_with(
        &["-np", "1", "sh", "-c", show],
        &[("HOROVOD_START_TIMEOUT", "41")],
    );
    assert!(
        r.stdout.contains("[0]<stdout>:41/41"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    // --gloo-timeout-seconds (and -x) set the ranks' budget; --start-timeout no longer
    // overrides it.
    let r = run(&[
        "-np",
        "1",
        "--start-timeout",
        "9",
        "--gloo-timeout-seconds",
        "7",
        "sh",
        "-c",
        show,
    ]);
    assert!(
        r.stdout.contains("[0]<stdout>:9/7"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    let r = run(&[
        "-np",
        "1",
        "-x",
        "HOROVOD_GLOO_TIMEOUT_SECONDS=5",
        "sh",
        "-c",
        show,
    ]);
    assert!(
        r.stdout.contains("[0]<stdout>:30/5"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    let r = run_with(&["-np", "1", "true"], &[("HOROVOD_START_TIMEOUT", "soon")]);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        r.stderr.contains("HOROVOD_START_TIMEOUT is `soon`"),
        "{}",
        r.stderr
    );
}

#[test]
fn flag_spellings_of_horovod_reach_the_ranks() {
    let r = run(&[
        "-np",
        "2",
        "--gloo",
        "--tcp",
        "--no-hierarchical-allreduce",
        "--no-stall-check",
        "--log-without-timestamp",
        "--log-level",
        "WARNING",
        "--network-interfaces",
        "lo",
        "sh",
        "-c",
        "echo $HOROVOD_CONTROLLER/$NCCL_IB_DISABLE/$HOROVOD_HIERARCHICAL_ALLREDUCE/\
         $HOROVOD_STALL_CHECK_DISABLE/$HOROVOD_LOG_HIDE_TIME/$HOROVOD_LOG_LEVEL/\
         $NCCL_SOCKET_IFNAME/$HOROVOD_HOSTNAME",
    ]);
    assert!(r.status.success(), "{}", r.stderr);
    for rank in 0..2 {
        let want = format!("[{rank}]<stdout>:gloo/1/0/1/1/WARNING/lo/127.0.0.1");
        assert!(r.stdout.contains(&want), "{want}\n{}", r.stdout);
    }
    let r = run(&[
        "-np",
        "1",
        "--network-interfaces",
        "nosuch0,nosuch1",
        "true",
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("nosuch0,nosuch1"), "{}", r.stderr);
}

/// mpirun (Open MPI or MPICH) if installed; the `--mpi` tests skip without it.
fn mpirun() -> Option<PathBuf> {
    let p = std::env::var_os("HORA_MPIRUN")
        .map(PathBuf::from)
        .or_else(|| {
            let out = Command::new("sh")
                .args(["-c", "command -v mpirun"])
                .output()
                .ok()?;
            let s = String::from_utf8(out.stdout).ok()?;
            (!s.trim().is_empty()).then(|| PathBuf::from(s.trim()))
        })?;
    p.exists().then_some(p)
}

#[test]
fn mpi_output_files_use_the_same_padded_layout() {
    if mpirun().is_none() {
        eprintln!("SKIPPED: no mpirun on PATH");
        return;
    }
    let dir = scratch();
    let out = dir.join("logs");
    // mpirun's own rank variable, so the line says which rank wrote it.
    let r = run(&[
        "--mpi",
        "-np",
        "11",
        "--output-filename",
        out.to_str().unwrap(),
        "-prefix-timestamp",
        "sh",
        "-c",
        "r=${OMPI_COMM_WORLD_RANK:-$PMI_RANK}; echo out$r; echo err$r >&2",
    ]);
    assert!(r.status.success(), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(rank_dirs(&out), padded_11());
    for rank in 0..11 {
        let d = out.join(format!("rank.{rank:02}"));
        assert_eq!(read(&d.join("stdout")), format!("out{rank}\n"));
        assert_eq!(read(&d.join("stderr")), format!("err{rank}\n"));
    }
    // Still on the terminal too, each line stamped.
    assert!(
        r.stdout
            .lines()
            .any(|l| stamped(l).is_some_and(|rest| rest.ends_with("out3"))),
        "{}",
        r.stdout
    );
    let _ = std::fs::remove_dir_all(dir);
}
