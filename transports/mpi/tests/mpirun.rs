//! The transport conformance table over MPI: `mpirun -np N hora-mpi-conformance` for N from
//! 2 to 5, each rank a real process (skipped, saying so, when mpirun is not installed). The
//! `mpirun` is `HORA_MPIRUN` or the one on `PATH`, Open MPI's or MPICH's.
#![cfg(feature = "mpi")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hora_mpi::mpirun::Mpirun;

#[test]
fn conformance_table_under_mpirun() {
    let mpirun = match Mpirun::find() {
        Ok(Some(m)) => m,
        Ok(None) => {
            eprintln!("SKIPPED: mpirun is not installed");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    for np in 2..=5 {
        let start = Instant::now();
        let child = mpirun
            .local_job(np)
            .arg(env!("CARGO_BIN_EXE_hora-mpi-conformance"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mpirun");
        // A watchdog, so a hang fails the test instead of stalling it.
        let pid = child.id();
        let watchdog = std::thread::spawn(move || {
            while start.elapsed() < Duration::from_secs(300) {
                std::thread::sleep(Duration::from_millis(200));
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    return false;
                }
            }
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            true
        });
        let out = child.wait_with_output().expect("wait for mpirun");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!watchdog.join().unwrap(), "np {np} hung:\n{text}");
        assert!(out.status.success(), "np {np} failed:\n{text}");
        let closing = text
            .lines()
            .find(|l| l.contains(" passed, 0 failed"))
            .unwrap_or_else(|| panic!("np {np}: no closing line:\n{text}"));
        // From 4 ranks on, every check runs (full_duplex_ring's 5-rank job needs np 5).
        if np >= 4 {
            assert!(
                closing.starts_with("9 passed, 0 failed, 0 skipped"),
                "np {np}: {closing}"
            );
        }
        assert!(
            text.contains(&format!("ok: full_duplex_ring (np {np}")) || np < 5,
            "np {np}:\n{text}"
        );
    }
}
