//! Helpers for the multi-process tests: find the binaries, run a job, read its output.

#![forbid(unsafe_code)]

pub mod netns;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The directory holding this build's binaries (`target/<profile>`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

/// Path to the `horovodrun` launcher, built first if it is missing or out of date.
pub fn horovodrun() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| workspace_bin("horovodrun", "horovodrun"))
        .clone()
}

/// Path to the `hora-bench` benchmark, built first if it is missing or out of date.
pub fn hora_bench() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| workspace_bin("hora-bench", "hora-bench"))
        .clone()
}

/// A binary of another workspace package, built (or found up to date by cargo) with this
/// test's profile: `cargo test -p hora-tests` does not build other packages' binaries, and one
/// left by an older build would test old code (`make test-mpi` builds none in its target dir).
fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-q", "-p", package, "--bin", bin]);
    if bin_dir().ends_with("release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "building {bin} failed");
    bin_dir().join(bin)
}

/// Path to the `hora-rank` test program (cargo builds a package's binaries before its
/// integration tests).
pub fn hora_rank() -> PathBuf {
    bin_dir().join("hora-rank")
}

/// A finished job: exit status, output and how long it took.
#[derive(Debug)]
pub struct JobResult {
    /// The launcher's exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// The launcher's stdout (ranks' lines prefixed with `[rank]`).
    pub stdout: String,
    /// The launcher's stderr.
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs `horovodrun -np <np> hora-rank <args>` with extra environment and waits for it.
pub fn run_job(np: usize, args: &[&str], env: &[(&str, &str)]) -> JobResult {
    let start = Instant::now();
    let mut cmd = Command::new(horovodrun());
    cmd.arg("-np")
        .arg(np.to_string())
        .arg(hora_rank())
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null());
    let out: Output = cmd.output().expect("spawn horovodrun");
    JobResult {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}
