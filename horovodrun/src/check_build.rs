//! `--check-build`: what this build of hora can do, in Horovod's layout. The backends come
//! from the code (`hora::build_info`: the launcher links the same `hora` crate the ranks
//! use), the Python faces from importing them with the Python the job would run
//! (`$PYTHON`, else `python3` on `PATH`).

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use hora::BuildInfo;

/// The Python faces: Horovod's framework name and the module that must import.
const FACES: [(&str, &str); 3] = [
    ("PyTorch", "hora.torch"),
    ("TensorFlow", "hora.tensorflow"),
    ("Keras", "hora.keras"),
];

/// Importing TensorFlow from a cold cache takes seconds; a hung interpreter must not hang us.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether one face imports: `Err` holds the reason's last line.
type Import = Result<(), String>;

/// The report printed by `horovodrun --check-build`.
pub(crate) fn report() -> String {
    let python = python();
    let imports = thread::scope(|s| {
        let running: Vec<_> = FACES
            .iter()
            .map(|(_, module)| s.spawn(|| import(&python, module, IMPORT_TIMEOUT)))
            .collect();
        running
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("the check panicked".into()))
            })
            .collect::<Vec<_>>()
    });
    render(&hora::build_info(), &python.to_string_lossy(), &imports)
}

/// `$PYTHON` when set, else `python3` (found on `PATH`).
fn python() -> OsString {
    std::env::var_os("PYTHON")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// Runs `python -c "import module"` for at most `timeout`.
fn import(python: &OsStr, module: &str, timeout: Duration) -> Import {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(format!("import {module}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.to_string_lossy()))?;
    let mut stderr = child.stderr.take().expect("piped");
    // Read while it runs, so a long traceback cannot fill the pipe and stall the child.
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "import did not finish within {}s",
                    timeout.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot wait for {}: {e}", python.to_string_lossy())),
        }
    };
    if status.success() {
        return Ok(());
    }
    let text = reader.join().unwrap_or_default();
    Err(text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map_or_else(|| format!("exited with {status}"), str::to_owned))
}

fn mark(on: bool) -> &'static str {
    if on { "X" } else { " " }
}

/// Horovod's words for a backend of `hora::build_info`: as a controller (if it can carry
/// control messages) and as tensor operations.
fn labels(name: &str) -> (&str, &str) {
    match name {
        "tcp" => (
            "TCP (hora rendezvous store, Gloo-style)",
            "TCP ring (allreduce, allgather, broadcast, alltoall, reducescatter)",
        ),
        "shm" => (
            "shared memory (control messages when every rank is on one host)",
            "shared memory (ranks on one host; HOROVOD_SHM=0 turns it off)",
        ),
        "mpi" => (
            "MPI (under mpirun; hora's `mpi` feature)",
            "MPI (MPI_Allreduce and the other MPI collectives)",
        ),
        "nccl" => ("NCCL", "NCCL"),
        "verbs" => ("RDMA verbs", "RDMA verbs"),
        other => (other, other),
    }
}

/// The report for a build and the outcome of importing each of [`FACES`] with `python`.
fn render(info: &BuildInfo, python: &str, imports: &[Import]) -> String {
    let mut out = format!("hora v{}:\n\nAvailable Frameworks:\n", info.version);
    for ((name, module), import) in FACES.iter().zip(imports) {
        match import {
            Ok(()) => out.push_str(&format!("    [X] {name} ({module})\n")),
            Err(why) => out.push_str(&format!(
                "    [ ] {name} ({module} does not import: {why})\n"
            )),
        }
    }
    out.push_str(&format!(
        "    [ ] MXNet\n    [X] Rust (the hora crate)\n    [X] C (libhora, framework-bindings/c)\n    \
         (Python faces imported with {python}; set PYTHON to check another)\n\n\
         Available Controllers:\n"
    ));
    for b in info.backends.iter().filter(|b| b.controller) {
        out.push_str(&format!("    [{}] {}\n", mark(b.built), labels(b.name).0));
    }
    out.push_str("\nAvailable Tensor Operations:\n");
    for b in &info.backends {
        out.push_str(&format!("    [{}] {}\n", mark(b.built), labels(b.name).1));
        if b.name == "shm" {
            out.push_str(&format!(
                "    [{}] hierarchical allreduce and allgather (shared memory in a host, TCP rings \
                 across hosts)\n",
                mark(info.has("shm") && info.has("tcp"))
            ));
        }
    }
    out.push_str(
        "\nFeatures:\n    [X] response cache\n    [X] tensor fusion\n    \
         [X] ssh launch (-H, --hostfile)\n    [X] torchrun / mpirun / Slurm environments\n    \
         [X] mpirun launch (--mpi)\n    [ ] elastic\n",
    );
    out
}

#[cfg(test)]
mod tests;
