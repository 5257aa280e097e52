//! The collectives conformance table in real processes started by horovodrun, on the
//! collectives the engine chooses: the ring over TCP (`HOROVOD_SHM=0`) and shared memory.

use std::process::{Command, Stdio};

use hora_tests::horovodrun;

/// Path to the `hora-conformance` rank program (built with this package's binaries).
fn hora_conformance() -> std::path::PathBuf {
    hora_tests::hora_rank().with_file_name("hora-conformance")
}

fn run(np: usize, shm: &str, transport: &str) {
    let out = Command::new(horovodrun())
        .args(["-np", &np.to_string()])
        .arg(hora_conformance())
        .env("HOROVOD_SHM", shm)
        .stdin(Stdio::null())
        .output()
        .expect("spawn horovodrun");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "np {np} HOROVOD_SHM={shm}:\n{stdout}\n{stderr}"
    );
    for rank in 0..np {
        let line = format!("rank {rank}: collectives conformance over {transport} OK");
        assert!(
            stdout.contains(&line),
            "missing {line:?}:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn the_table_passes_over_tcp_in_processes() {
    run(3, "0", "tcp");
}

#[test]
fn the_table_passes_over_shared_memory_in_processes() {
    run(4, "1", "shm");
}
