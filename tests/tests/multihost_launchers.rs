//! A program that calls `hora::init()` also runs when another launcher starts it: the ranks
//! here are started the way torchrun, Open MPI's mpirun, MPICH's Hydra and Slurm's srun start
//! them (their variables only, no horovodrun), and rank 0 serves the rendezvous store; so do
//! ranks a script starts with Horovod's own variables.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hora_tests::hora_rank;

/// A port free right now on loopback (the store's, picked by the "launcher"). It comes from
/// below the kernel's ephemeral range (32768+), so no outgoing connection of a concurrent test
/// can take it between now and rank 0's bind; the store sits at this port, `MASTER_PORT` one
/// below.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 21_000 + (std::process::id() % 400) as u16 * 20;
    loop {
        let port = base + NEXT.fetch_add(2, Ordering::Relaxed) % 8_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port - 1)).is_ok()
        {
            return port;
        }
    }
}

/// Starts `np` hora-rank processes, each with `env(rank)`, and checks they all pass.
fn run(np: usize, env: impl Fn(usize) -> Vec<(String, String)>, scenario: &str) {
    let start = Instant::now();
    let mut children = Vec::new();
    for rank in 0..np {
        let mut cmd = Command::new(hora_rank());
        cmd.arg(scenario);
        for (k, _) in std::env::vars() {
            if k.starts_with("HOROVOD_") || k.starts_with("HORA_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env(rank))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        children.push(cmd.spawn().unwrap());
    }
    let mut failures = Vec::new();
    for (rank, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !stdout.contains(&format!("rank {rank}: {scenario} OK")) {
            failures.push(format!("rank {rank}: {}\n{stdout}\n{stderr}", out.status));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(start.elapsed() < Duration::from_secs(60));
}

fn kv(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn torchrun_environment() {
    let port = free_port();
    run(
        4,
        |r| {
            kv(&[
                ("RANK", r.to_string()),
                ("WORLD_SIZE", "4".into()),
                ("LOCAL_RANK", r.to_string()),
                ("LOCAL_WORLD_SIZE", "4".into()),
                ("GROUP_RANK", "0".into()),
                ("MASTER_ADDR", "127.0.0.1".into()),
                // The store goes on MASTER_PORT + 1 (torchrun's own store holds MASTER_PORT).
                ("MASTER_PORT", (port - 1).to_string()),
                ("TORCHELASTIC_RUN_ID", format!("test-{port}")),
            ])
        },
        "collectives",
    );
}

/// A script that starts the ranks itself with Horovod's own variables (as Horovod's Gloo
/// launcher sets them): rank 0 serves the store at `HOROVOD_GLOO_RENDEZVOUS_ADDR:PORT`, and
/// every rank listens on `HOROVOD_GLOO_IFACE`'s address.
#[test]
fn horovod_gloo_environment() {
    let port = free_port();
    run(
        3,
        |r| {
            kv(&[
                ("HOROVOD_RANK", r.to_string()),
                ("HOROVOD_SIZE", "3".into()),
                ("HOROVOD_LOCAL_RANK", r.to_string()),
                ("HOROVOD_LOCAL_SIZE", "3".into()),
                ("HOROVOD_CROSS_RANK", "0".into()),
                ("HOROVOD_CROSS_SIZE", "1".into()),
                ("HOROVOD_GLOO_RENDEZVOUS_ADDR", "localhost".into()),
                ("HOROVOD_GLOO_RENDEZVOUS_PORT", port.to_string()),
                ("HOROVOD_GLOO_IFACE", "lo".into()),
                ("HOROVOD_CONTROLLER", "gloo".into()),
                (
                    "HOROVOD_SECRET_KEY",
                    "00112233445566778899aabbccddeeff".into(),
                ),
            ])
        },
        "collectives",
    );
}

#[test]
fn open_mpi_environment_on_one_host() {
    let port = free_port();
    run(
        3,
        |r| {
            kv(&[
                ("OMPI_COMM_WORLD_RANK", r.to_string()),
                ("OMPI_COMM_WORLD_SIZE", "3".into()),
                ("OMPI_COMM_WORLD_LOCAL_RANK", r.to_string()),
                ("OMPI_COMM_WORLD_LOCAL_SIZE", "3".into()),
                ("HORA_STORE_PORT", port.to_string()),
                ("PMIX_NAMESPACE", format!("ompi-{port}")),
            ])
        },
        "collectives",
    );
}

#[test]
fn mpich_environment_with_a_given_secret() {
    let port = free_port();
    run(
        2,
        |r| {
            kv(&[
                ("PMI_RANK", r.to_string()),
                ("PMI_SIZE", "2".into()),
                ("MPI_LOCALRANKID", r.to_string()),
                ("MPI_LOCALNRANKS", "2".into()),
                ("MASTER_ADDR", "localhost".into()),
                ("MASTER_PORT", (port - 1).to_string()),
                (
                    "HOROVOD_SECRET_KEY",
                    "0123456789abcdef0123456789abcdef".into(),
                ),
            ])
        },
        "collectives",
    );
}

#[test]
fn slurm_srun_environment() {
    let port = free_port();
    run(
        4,
        |r| {
            kv(&[
                ("SLURM_PROCID", r.to_string()),
                ("SLURM_STEP_NUM_TASKS", "4".into()),
                ("SLURM_LOCALID", r.to_string()),
                ("SLURM_NODEID", "0".into()),
                ("SLURM_STEP_NUM_NODES", "1".into()),
                ("SLURM_STEP_TASKS_PER_NODE", "4".into()),
                ("SLURM_STEP_NODELIST", "localhost".into()),
                ("SLURM_JOB_ID", port.to_string()),
                ("SLURM_STEP_ID", "0".into()),
                ("HORA_STORE_PORT", port.to_string()),
            ])
        },
        "collectives",
    );
}

/// Runs a real launcher's command line and checks every rank passed `collectives`.
fn real_launcher(what: &str, cmd: &mut Command, np: usize) {
    for (k, _) in std::env::vars() {
        if k.starts_with("HOROVOD_") || k.starts_with("HORA_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    // A launcher that hangs must not hang the suite.
    let pgid = child.id();
    let watchdog = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(90);
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
            if !std::path::Path::new(&format!("/proc/{pgid}")).exists() {
                return false;
            }
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        true
    });
    let _ = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what}: {}\n{stdout}\n{stderr}",
        out.status
    );
    for rank in 0..np {
        assert!(
            stdout.contains(&format!("rank {rank}: collectives OK")),
            "{what}: rank {rank}\n{stdout}\n{stderr}"
        );
    }
    // The derived secret is announced, never printed.
    assert!(stderr.contains("only as safe as its network"), "{stderr}");
}

#[test]
fn real_mpirun_if_installed() {
    let Some(mpirun) = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("SKIPPED: real mpirun test: mpirun is not installed");
        return;
    };
    let open_mpi = Command::new(mpirun)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Open MPI"));
    let mut cmd = Command::new(mpirun);
    if open_mpi {
        cmd.args(["--allow-run-as-root", "--oversubscribe"]);
    }
    cmd.args(["-np", "3"]).arg(hora_rank()).arg("collectives");
    real_launcher("mpirun", &mut cmd, 3);
}

#[test]
fn real_torchrun_if_installed() {
    // The project's venv (make deps) has torch; torchrun --no-python runs any program.
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/torchrun");
    if !venv.exists() {
        eprintln!("SKIPPED: real torchrun test: {} not found", venv.display());
        return;
    }
    let port = free_port() - 1;
    let mut cmd = Command::new(venv);
    cmd.args(["--no-python", "--nproc-per-node", "3", "--master-port"])
        .arg(port.to_string())
        .arg(hora_rank())
        .arg("collectives");
    real_launcher("torchrun", &mut cmd, 3);
}
