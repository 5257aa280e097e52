//! Compiles tests/smoke.c against include/hora.h and libhora, and runs it under
//! `horovodrun -np 3`: every collective, the async form and the error paths, from C.

use std::path::{Path, PathBuf};
use std::process::Command;

fn target_dir() -> PathBuf {
    // target/<profile>/deps/<test> → target/<profile>
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn cargo_build(package: &str) {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-p", package]);
    if target_dir().ends_with("release") {
        cmd.arg("--release");
    }
    assert!(
        cmd.status().unwrap().success(),
        "cargo build -p {package} failed"
    );
}

#[test]
fn c_program_runs_every_collective_and_error_path_at_np_3() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let lib_dir = target_dir();
    if !lib_dir.join("libhora.so").exists() {
        cargo_build("hora-capi");
    }
    if !lib_dir.join("horovodrun").exists() {
        cargo_build("horovodrun");
    }
    let exe = lib_dir.join("hora_c_smoke");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .arg("-O2")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(dir.join("include"))
        .arg(dir.join("tests/smoke.c"))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&lib_dir)
        .arg("-lhora")
        .arg("-lm")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .status()
        .expect("run the C compiler");
    assert!(status.success(), "compiling smoke.c failed");
    let out = Command::new(lib_dir.join("horovodrun"))
        .args(["-np", "3"])
        .arg(&exe)
        .env("HOROVOD_DYNAMIC_PROCESS_SETS", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for rank in 0..3 {
        assert!(
            stdout.contains(&format!("rank {rank}: C ABI OK")),
            "{stdout}\n{stderr}"
        );
    }
    if let Some(line) = stdout.lines().find(|l| l.contains("from C: median")) {
        println!("{line}");
    }
}
