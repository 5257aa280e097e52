//! hora-bench's own correctness check, for every collective and several dtypes, at np = 3.

use std::process::Command;

use hora_tests::{hora_bench, horovodrun};

#[test]
fn every_collective_checks_clean_under_hora_bench() {
    for (collective, dtype, op) in [
        ("allreduce", "f32", "sum"),
        ("allreduce", "i32", "product"),
        ("allreduce", "f16", "average"),
        ("allgather", "i64", "sum"),
        ("broadcast", "u8", "sum"),
        ("alltoall", "bf16", "sum"),
        ("reducescatter", "f64", "max"),
    ] {
        let out = Command::new(horovodrun())
            .args(["-np", "3"])
            .arg(hora_bench())
            .args([
                collective, "-b", "1K", "-e", "1M", "-f", "32", "-n", "3", "-w", "1",
            ])
            .args(["--dtype", dtype, "--op", op, "--check"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{collective} {dtype} {op}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<&str> = stdout.lines().filter(|l| !l.contains('#')).collect();
        assert!(
            rows.len() >= 3,
            "{collective}: expected 3+ sizes:\n{stdout}"
        );
        for row in rows {
            let wrong = row.split_whitespace().last().unwrap();
            assert_eq!(wrong, "0", "{collective} {dtype} {op}: {row}");
        }
    }
}

#[test]
fn transport_flag_forces_the_transport_and_the_header_names_it() {
    for (flag, header) in [
        ("tcp", "transport tcp (forced by --transport)"),
        ("shm", "transport shm (forced by --transport)"),
    ] {
        let out = Command::new(horovodrun())
            .args(["-np", "2"])
            .arg(hora_bench())
            .args(["allreduce", "-b", "4K", "-e", "64K", "-n", "3", "-w", "1"])
            .args(["--check", "--transport", flag])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(header),
            "--transport {flag}: expected {header:?}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for row in stdout.lines().filter(|l| !l.contains('#')) {
            assert_eq!(row.split_whitespace().last(), Some("0"), "{flag}: {row}");
        }
    }
    // Without the mpi feature the flag is refused, saying how to get it.
    if !cfg!(feature = "mpi") {
        let out = Command::new(horovodrun())
            .args(["-np", "2"])
            .arg(hora_bench())
            .args(["allreduce", "-b", "4K", "-e", "4K", "--transport", "mpi"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && stderr.contains("transport mpi needs a build with --features mpi"),
            "{stderr}"
        );
    }
}

/// hora-bench under horovodrun with `np` ranks.
fn bench(np: &str, args: &[&str]) -> std::process::Output {
    Command::new(horovodrun())
        .args(["-np", np])
        .arg(hora_bench())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn raw_mode_times_the_transport_without_the_engine() {
    let out = bench(
        "2",
        &[
            "allreduce",
            "--raw",
            "-b",
            "4K",
            "-e",
            "256K",
            "-f",
            "8",
            "-n",
            "3",
            "-w",
            "1",
            "--transport",
            "shm",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && stdout.contains("--raw: 2 ranks")
            && stdout.contains("transport shm (no engine)"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sizes: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.contains('#'))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(sizes, ["4096", "32768", "262144"], "{stdout}");
    // Average is the engine's postscale, so raw mode refuses it, saying so.
    let out = bench(
        "2",
        &[
            "allreduce",
            "--raw",
            "--op",
            "average",
            "-b",
            "4K",
            "-e",
            "4K",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--raw times allreduce with sum"),
        "{stderr}"
    );
}
