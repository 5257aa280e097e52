//! Jobs started through mpirun: `horovodrun --mpi` with this build's ranks (TCP through the
//! launcher's store in a default build, the MPI transport in a `--features mpi` build), the
//! errors for a missing mpirun or an MPI transport that cannot be had, and, in an MPI build,
//! every collective over MPI against expected values at 2..4 ranks.
//!
//! Tests that need mpirun skip (saying so) when it is not installed. The mpirun is
//! `HORA_MPIRUN` (which `horovodrun --mpi` reads too) or the one on `PATH`, Open MPI's or
//! MPICH's: `make test-mpi` runs this file under each.

#[cfg(feature = "mpi")]
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hora_mpi::mpirun::Mpirun;
use hora_tests::{hora_rank, horovodrun};

/// Generous: a loaded 2-core machine runs several of these at once.
const LIMIT: Duration = Duration::from_secs(240);

struct Ran {
    code: Option<i32>,
    out: String,
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    elapsed: Duration,
}

/// Runs `cmd` to completion, killing it (and failing the test) past `limit`.
fn run(cmd: Command, limit: Duration) -> Ran {
    run_watching(cmd, limit, str::to_owned, |_, _| {})
}

/// [`run`], with the output (stdout, then stderr) passed through `clean`, and shown so far to
/// `watch` with the launcher's pid while it runs.
fn run_watching(
    mut cmd: Command,
    limit: Duration,
    clean: impl Fn(&str) -> String,
    mut watch: impl FnMut(&str, u32),
) -> Ran {
    let start = Instant::now();
    let dir = std::env::temp_dir().join(format!(
        "hora-mpirun-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let (o, e) = (dir.join("out"), dir.join("err"));
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).expect("out file"))
        .stderr(std::fs::File::create(&e).expect("err file"));
    let mut child = cmd.spawn().expect("spawn");
    let read = || {
        format!(
            "{}{}",
            std::fs::read_to_string(&o).unwrap_or_default(),
            std::fs::read_to_string(&e).unwrap_or_default()
        )
    };
    let code = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {limit:?}; output:\n{}", read());
        }
        watch(&clean(&read()), child.id());
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = clean(&read());
    let _ = std::fs::remove_dir_all(&dir);
    Ran {
        code,
        out,
        elapsed: start.elapsed(),
    }
}

/// The mpirun to test with; `None` (saying so) when none is installed. A `HORA_MPIRUN` that
/// is not an Open MPI or MPICH mpirun fails the test rather than skipping it.
fn mpirun() -> Option<Mpirun> {
    match Mpirun::find() {
        Ok(Some(m)) => Some(m),
        Ok(None) => {
            eprintln!("SKIPPED: mpirun is not installed");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn assert_every_rank(ran: &Ran, np: usize, what: &str) {
    assert_eq!(ran.code, Some(0), "{what} failed:\n{}", ran.out);
    for r in 0..np {
        assert!(
            ran.out.contains(&format!("rank {r}: collectives OK")),
            "{what}: rank {r} did not report success:\n{}",
            ran.out
        );
    }
}

#[test]
fn horovodrun_mpi_runs_this_builds_ranks() {
    if mpirun().is_none() {
        return;
    }
    for np in [2, 3] {
        let mut cmd = Command::new(horovodrun());
        cmd.args(["--mpi", "-np", &np.to_string()]);
        if cfg!(feature = "mpi") {
            // Insist on MPI, so a silent fallback to TCP would fail the test.
            cmd.args(["-x", "HOROVOD_CONTROLLER=mpi"]);
        }
        cmd.arg(hora_rank()).arg("collectives");
        let ran = run(cmd, LIMIT);
        assert_every_rank(&ran, np, &format!("horovodrun --mpi -np {np}"));
    }
}

#[test]
fn missing_mpirun_is_a_clear_error() {
    let empty = std::env::temp_dir().join(format!("hora-no-mpi-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let mut cmd = Command::new(horovodrun());
    cmd.args(["--mpi", "-np", "2"])
        .arg(hora_rank())
        .env("PATH", &empty)
        .env_remove("HORA_MPIRUN");
    let ran = run(cmd, Duration::from_secs(60));
    let _ = std::fs::remove_dir(&empty);
    assert_eq!(ran.code, Some(1), "{}", ran.out);
    assert!(
        ran.out.contains("mpirun was not found") && ran.out.contains("HORA_MPIRUN"),
        "{}",
        ran.out
    );
}

/// Asking for MPI where it cannot be had fails at init, saying why, instead of falling back.
#[test]
fn controller_mpi_that_cannot_be_had_is_refused() {
    // Not under mpirun.
    let mut cmd = Command::new(horovodrun());
    cmd.args(["-np", "2", "-x", "HOROVOD_CONTROLLER=mpi"])
        .arg(hora_rank())
        .arg("collectives");
    let ran = run(cmd, LIMIT);
    assert_ne!(ran.code, Some(0), "{}", ran.out);
    let why = if cfg!(feature = "mpi") {
        "needs the job started by mpirun"
    } else {
        "this build of hora has no MPI transport"
    };
    assert!(
        ran.out.contains("HOROVOD_CONTROLLER") && ran.out.contains(why),
        "{}",
        ran.out
    );
    // Under mpirun, in a build without the feature.
    if cfg!(feature = "mpi") || mpirun().is_none() {
        return;
    }
    let mut cmd = Command::new(horovodrun());
    cmd.args(["--mpi", "-np", "2", "-x", "HOROVOD_CONTROLLER=mpi"])
        .arg(hora_rank())
        .arg("collectives");
    let ran = run(cmd, LIMIT);
    assert_ne!(ran.code, Some(0), "{}", ran.out);
    assert!(
        ran.out
            .contains("this build of hora has no MPI transport: rebuild with `--features mpi`"),
        "{}",
        ran.out
    );
}

/// `mpirun` for a local job of `np` ranks that insist on the MPI transport.
#[cfg(feature = "mpi")]
fn mpirun_cmd(mpirun: &Mpirun, np: usize) -> Command {
    let mut cmd = mpirun.local_job(np);
    mpirun.forward_env(&mut cmd, "HOROVOD_CONTROLLER", "mpi");
    cmd
}

/// Every collective over MPI (native MPI calls, and the ring over the MPI transport for
/// bf16), ragged sizes and join, checked against values computed by each rank.
#[cfg(feature = "mpi")]
#[test]
fn engine_collectives_over_mpi() {
    let Some(mpirun) = mpirun() else { return };
    for np in 2..=4 {
        let mut cmd = mpirun_cmd(&mpirun, np);
        cmd.arg(hora_rank()).arg("collectives");
        let ran = run(cmd, LIMIT);
        assert_every_rank(&ran, np, &format!("mpirun -np {np} hora-rank collectives"));
    }
}

/// hora-bench built with the `mpi` feature into this test's target dir (the shared helper
/// would build it without the feature when it is missing).
#[cfg(feature = "mpi")]
fn mpi_bench() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test> -> target/<profile>, target
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
    let target = profile_dir.parent().expect("target dir");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "-q",
        "-p",
        "hora-bench",
        "--features",
        "mpi",
        "--bin",
        "hora-bench",
    ])
    .arg("--target-dir")
    .arg(target);
    if profile_dir.ends_with("release") {
        cmd.arg("--release");
    }
    assert!(
        cmd.status().expect("run cargo build").success(),
        "building hora-bench with --features mpi failed"
    );
    profile_dir.join("hora-bench")
}

/// hora-bench's own result check for each collective and several dtypes at odd sizes.
#[cfg(feature = "mpi")]
#[test]
fn bench_check_over_mpi() {
    let Some(mpirun) = mpirun() else { return };
    let bench = mpi_bench();
    let cases: &[(&str, &[&str])] = &[
        (
            "allreduce",
            &["f32", "f64", "i32", "i64", "u8", "i8", "f16", "bf16"],
        ),
        ("allgather", &["f32", "u8"]),
        ("broadcast", &["f64"]),
        ("alltoall", &["i32"]),
        ("reducescatter", &["f32", "i64", "bf16"]),
    ];
    for np in [2, 3] {
        for (coll, dtypes) in cases {
            for dtype in *dtypes {
                let mut cmd = mpirun_cmd(&mpirun, np);
                cmd.arg(&bench).args([
                    coll, "-b", "24", "-e", "2M", "-f", "37", "-n", "2", "-w", "1", "--check",
                    "--dtype", dtype,
                ]);
                let ran = run(cmd, LIMIT);
                let what = format!("np {np} {coll} {dtype}");
                assert_eq!(ran.code, Some(0), "{what}:\n{}", ran.out);
                let rows: Vec<&str> = ran
                    .out
                    .lines()
                    .filter(|l| !l.starts_with('#') && l.split_whitespace().count() >= 8)
                    .collect();
                assert!(rows.len() >= 4, "{what}: too few result rows:\n{}", ran.out);
                for row in rows {
                    let wrong = row.split_whitespace().last().unwrap();
                    assert_eq!(wrong, "0", "{what}: wrong elements in `{row}`");
                }
            }
        }
    }
}

/// A rank that dies under mpirun ends the job (mpirun's doing), naming it, instead of
/// leaving the others waiting on it.
#[cfg(feature = "mpi")]
#[test]
fn a_killed_rank_ends_the_job() {
    let Some(mpirun) = mpirun() else { return };
    let mut cmd = mpirun_cmd(&mpirun, 3);
    mpirun.forward_env(&mut cmd, "HORA_RANK_DIE", "1");
    cmd.arg(hora_rank()).args(["loop", "100000"]);
    let ran = run(cmd, LIMIT);
    assert_ne!(ran.code, Some(0), "{}", ran.out);
    assert!(
        ran.elapsed < Duration::from_secs(120),
        "took {:?}",
        ran.elapsed
    );
    assert!(
        ran.out.contains("rank 1"),
        "the output does not name rank 1:\n{}",
        ran.out
    );
}

/// The collectives conformance table (`hora::collectives::conformance`) with one process per
/// rank under mpirun: MPI's native collectives as the engine uses them, and hora's ring over
/// the MPI transport (default and small segments), at np 2..5.
#[cfg(feature = "mpi")]
#[test]
fn collectives_conformance_over_mpi() {
    let Some(mpirun) = mpirun() else { return };
    for mode in ["native", "ring", "ring-small"] {
        for np in 2..=5 {
            let mut cmd = mpirun_cmd(&mpirun, np);
            cmd.arg(env!("CARGO_BIN_EXE_hora-mpi-collectives"))
                .arg(mode);
            let ran = run(cmd, LIMIT);
            let what = format!("{mode} np {np}");
            assert_eq!(ran.code, Some(0), "{what}:\n{}", ran.out);
            for r in 0..np {
                assert!(
                    ran.out
                        .contains(&format!("rank {r}: collectives conformance ({mode}) OK")),
                    "{what}: rank {r} did not pass:\n{}",
                    ran.out
                );
            }
        }
    }
}

/// A rank that fails while its peers are inside a collective (a blocking MPI call for
/// `native`) ends the job, naming it, instead of hanging: it skips `MPI_Finalize`, so mpirun
/// stops the others.
#[cfg(feature = "mpi")]
#[test]
fn a_failing_rank_ends_the_job_inside_a_collective() {
    let Some(mpirun) = mpirun() else { return };
    for mode in ["native", "ring"] {
        let mut cmd = mpirun_cmd(&mpirun, 3);
        mpirun.forward_env(&mut cmd, "HORA_CONFORMANCE_FAIL", "1");
        cmd.arg(env!("CARGO_BIN_EXE_hora-mpi-collectives"))
            .arg(mode);
        let ran = run(cmd, LIMIT);
        assert_ne!(ran.code, Some(0), "{mode}:\n{}", ran.out);
        assert!(
            ran.elapsed < Duration::from_secs(120),
            "{mode}: took {:?}",
            ran.elapsed
        );
        assert!(
            ran.out.contains("rank 1: collectives conformance")
                && ran.out.contains("injected failure"),
            "{mode}: rank 1's failure is not reported:\n{}",
            ran.out
        );
    }
}

/// Under mpirun an MPI build picks the MPI transport by itself, and `HOROVOD_CONTROLLER=gloo`
/// keeps hora's own (shared memory for these two ranks on one host, TCP across hosts);
/// hora-bench's header names the transport the job chose.
#[cfg(feature = "mpi")]
#[test]
fn mpirun_selects_mpi_unless_told_gloo() {
    let Some(mpirun) = mpirun() else { return };
    let bench = mpi_bench();
    for (controller, want) in [("auto", "transport mpi "), ("gloo", "transport shm ")] {
        let mut cmd = mpirun.local_job(2);
        mpirun.forward_env(&mut cmd, "HOROVOD_CONTROLLER", controller);
        cmd.arg(&bench).args([
            "allreduce",
            "-b",
            "4K",
            "-e",
            "4K",
            "-n",
            "2",
            "-w",
            "1",
            "--check",
        ]);
        let ran = run(cmd, LIMIT);
        assert_eq!(ran.code, Some(0), "{controller}:\n{}", ran.out);
        let header = ran
            .out
            .lines()
            .find(|l| l.starts_with("# hora-bench"))
            .unwrap_or_default();
        assert!(
            header.contains(want),
            "HOROVOD_CONTROLLER={controller}: expected `{want}` in {header:?}"
        );
    }
}

/// `horovodrun --mpi` across two network-namespace hosts.
#[cfg(feature = "mpi")]
#[path = "mpirun/multihost.rs"]
mod multihost;
