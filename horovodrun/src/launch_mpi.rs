//! `horovodrun --mpi`: the job is started by `mpirun` (Open MPI or MPICH's Hydra), which places
//! the ranks, starts them on other hosts and forwards signals; this launcher still serves the
//! rendezvous store and makes the job secret.
//!
//! Ranks built with hora's `mpi` feature see that `mpirun` started them and run on the MPI
//! transport, ignoring the store. Ranks built without it (the default wheel) take their rank
//! and size from mpirun's variables and rendezvous over TCP through this launcher's store
//! (`HORA_STORE_ADDR`, `HORA_STORE_SERVE=0`), so `horovodrun --mpi python train.py` works with
//! either build. Every variable the ranks need — as in Horovod, the launcher's whole
//! environment minus `env::DENIED`, plus the job's own — is put in mpirun's environment and
//! forwarded by name (`-x NAME` / `-genvlist`), so the secret never appears on a command line.
//!
//! With `--output-filename` or `--prefix-output-with-timestamp`, mpirun's output goes through
//! the launcher, which sorts its rank-tagged lines into the same `DIR/rank.<N>/` files as
//! without `--mpi` (`output::demux`) and stamps each line.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;

use hora::rendezvous::StoreServer;
use hora_mpi::mpirun::{Flavor, Mpirun};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::hosts::Slot;
use crate::output::{self, Stream};
use crate::sys;

/// What the job needs from the command line.
#[derive(Debug)]
pub(crate) struct MpiPlan {
    pub(crate) command: Vec<OsString>,
    pub(crate) np: u32,
    /// Ranks per host, in placement order; `None` for a job on this host only.
    pub(crate) hosts: Option<Vec<(String, u32)>>,
    pub(crate) listen_ip: IpAddr,
    /// `--network-interfaces`, in order (empty: mpirun's choice).
    pub(crate) nics: Vec<String>,
    /// `--binding-args`, in place of horovodrun's `--bind-to none --map-by slot`.
    pub(crate) binding: Option<Vec<String>>,
    /// `--output-filename`: each rank's lines also go to `DIR/rank.<N>/stdout|stderr`.
    pub(crate) output_dir: Option<PathBuf>,
    /// `--prefix-output-with-timestamp`.
    pub(crate) timestamps: bool,
    pub(crate) start_timeout_secs: u64,
    pub(crate) extra_env: Vec<(String, String)>,
    /// `--mpi-args`, placed before the command.
    pub(crate) extra_args: Vec<String>,
    /// Options for the ssh that mpirun starts its remote daemons with (see [`ssh_options`]).
    pub(crate) ssh: Vec<String>,
    /// Whether the user gave an ssh flag (`-p`, `-i`, `--ssh-config-file`).
    pub(crate) ssh_given: bool,
}

impl MpiPlan {
    /// Ranks per host from the launcher's slot assignment; `None` when every rank is local.
    pub(crate) fn hosts_of(slots: &[Slot]) -> Option<Vec<(String, u32)>> {
        if slots.iter().all(|s| s.host == "localhost") {
            return None;
        }
        let mut out: Vec<(String, u32)> = Vec::new();
        for s in slots {
            match out.iter_mut().find(|(h, _)| *h == s.host) {
                Some((_, n)) => *n += 1,
                None => out.push((s.host.clone(), 1)),
            }
        }
        Some(out)
    }
}

/// horovodrun's ssh flags as options for mpirun's own ssh, which reaches the other hosts:
/// the user's port, key and config file, plus no password prompt and the start timeout for the
/// connection, so an unreachable host fails the job instead of stalling it.
pub(crate) fn ssh_options(
    port: Option<u16>,
    identity: Option<&Path>,
    config: Option<&Path>,
    connect_timeout_secs: u64,
) -> Result<Vec<String>, String> {
    let mut o = Vec::new();
    // mpirun splits these options at whitespace before it runs ssh.
    let mut path = |flag: &str, what: &str, p: &Path| match p.to_str() {
        Some(s) if !s.is_empty() && !s.contains(char::is_whitespace) => {
            o.push(flag.to_owned());
            o.push(s.to_owned());
            Ok(())
        }
        _ => Err(format!(
            "--mpi: the {what} path {} has whitespace (or is not UTF-8), which mpirun cannot \
             hand to ssh; use a path without it",
            p.display()
        )),
    };
    if let Some(c) = config {
        path("-F", "--ssh-config-file", c)?;
    }
    if let Some(i) = identity {
        path("-i", "--ssh-identity-file", i)?;
    }
    if let Some(p) = port {
        o.push("-p".to_owned());
        o.push(p.to_string());
    }
    o.extend([
        "-o".to_owned(),
        "BatchMode=yes".to_owned(),
        "-o".to_owned(),
        format!("ConnectTimeout={}", connect_timeout_secs.max(1)),
    ]);
    Ok(o)
}

/// Whether `--mpi-args` sets the MCA parameter `key` itself (Open MPI refuses one set twice
/// with different values, so ours then steps aside).
fn user_sets_mca(extra: &[String], key: &str) -> bool {
    extra
        .windows(2)
        .any(|w| matches!(w[0].as_str(), "--mca" | "-mca") && w[1] == key)
}

/// `mpirun` from `HORA_MPIRUN`, else the first `mpirun` on `PATH` (see [`Mpirun::locate`]).
pub(crate) fn find_mpirun() -> Result<PathBuf, String> {
    Mpirun::locate()?.ok_or_else(|| {
        "--mpi: mpirun was not found on PATH; install an MPI (Debian: `apt-get install \
         openmpi-bin`, or `mpich`), set HORA_MPIRUN=/path/to/mpirun, or run without --mpi \
         to use horovodrun's own launcher"
            .to_owned()
    })
}

/// The variables every rank gets through mpirun, beyond the ones MPI sets itself.
pub(crate) fn rank_env(
    plan: &MpiPlan,
    store: SocketAddr,
    secret_hex: &str,
    inherited: impl Iterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| {
        env.retain(|(n, _)| n != k);
        env.push((k.to_owned(), v));
    };
    // Horovod names every variable of its environment to mpirun (minus its deny list); so do
    // we. A name mpirun could misread (not a plain identifier) stays behind.
    for (k, v) in inherited {
        let plain = !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if plain && crate::env::exportable(&k) {
            set(&k, v);
        }
    }
    set("HORA_STORE_ADDR", store.to_string());
    set("HOROVOD_GLOO_RENDEZVOUS_ADDR", store.ip().to_string());
    set("HOROVOD_GLOO_RENDEZVOUS_PORT", store.port().to_string());
    set("HORA_STORE_SERVE", "0".to_owned());
    set("HOROVOD_SECRET_KEY", secret_hex.to_owned());
    set("HOROVOD_START_TIMEOUT", plan.start_timeout_secs.to_string());
    if !plan
        .extra_env
        .iter()
        .any(|(k, _)| k == "HOROVOD_GLOO_TIMEOUT_SECONDS")
    {
        set(
            "HOROVOD_GLOO_TIMEOUT_SECONDS",
            plan.start_timeout_secs.to_string(),
        );
    }
    for (k, v) in &plan.extra_env {
        set(k, v.clone());
    }
    env.retain(|(k, _)| k != "HORA_MPIRUN");
    env
}

/// mpirun's arguments (the variables themselves go in its environment, named here only).
pub(crate) fn arguments(
    flavor: Flavor,
    plan: &MpiPlan,
    env_names: &[String],
    root: bool,
    cores: usize,
) -> Vec<OsString> {
    // The user's own binding replaces ours (Open MPI refuses two).
    let user_binds = plan.binding.is_some()
        || plan
            .extra_args
            .iter()
            .any(|a| a == "--bind-to" || a == "-bind-to");
    let binding = plan.binding.iter().flatten().map(OsString::from);
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    match flavor {
        Flavor::OpenMpi => {
            push("-np");
            push(&plan.np.to_string());
            match &plan.hosts {
                Some(hosts) => {
                    push("-H");
                    push(&host_list(hosts));
                }
                // A local job may have more ranks than cores (tests, small machines).
                None if plan.np as usize > cores => push("--oversubscribe"),
                None => {}
            }
            if root {
                push("--allow-run-as-root");
            }
            if !user_binds {
                for f in ["--bind-to", "none", "--map-by", "slot"] {
                    push(f);
                }
            } else if plan.binding.is_none() {
                push("--map-by");
                push("slot");
            }
            push("--tag-output");
            if !plan.nics.is_empty() {
                let nics = plan.nics.join(",");
                for key in ["btl_tcp_if_include", "oob_tcp_if_include"] {
                    if !user_sets_mca(&plan.extra_args, key) {
                        push("--mca");
                        push(key);
                        push(&nics);
                    }
                }
            }
            if plan.hosts.is_some()
                && !plan.ssh.is_empty()
                && !user_sets_mca(&plan.extra_args, "plm_rsh_args")
            {
                push("--mca");
                push("plm_rsh_args");
                push(&plan.ssh.join(" "));
            }
            for n in env_names {
                push("-x");
                push(n);
            }
        }
        Flavor::Hydra => {
            push("-np");
            push(&plan.np.to_string());
            if let Some(hosts) = &plan.hosts {
                push("-hosts");
                push(&host_list(hosts));
                // The other hosts' proxies connect back to this name, by default this
                // machine's hostname, which they may not resolve (or resolve to an address
                // they cannot reach); the address that routes to them works.
                if !plan.extra_args.iter().any(|a| a == "-localhost") {
                    push("-localhost");
                    push(&plan.listen_ip.to_string());
                }
            }
            // Hydra takes one interface: the first asked for.
            if let Some(nic) = plan.nics.first() {
                push("-iface");
                push(nic);
            }
            // Its options go in HYDRA_LAUNCHER_EXTRA_ARGS (`mpirun_env`): MPICH's Hydra has
            // no flag for them.
            if hydra_ssh(plan) {
                push("-launcher");
                push("ssh");
            }
            if !user_binds {
                push("-bind-to");
                push("none");
            }
            push("-prepend-rank");
            if !env_names.is_empty() {
                push("-genvlist");
                push(&env_names.join(","));
            }
        }
    }
    a.extend(binding);
    a.extend(plan.extra_args.iter().map(OsString::from));
    a.extend(plan.command.iter().cloned());
    a
}

/// Whether Hydra is told to start its proxies with ssh and our ssh options. Only when the user
/// gave ssh flags: forcing ssh would override Hydra's own choice (Slurm's launcher inside an
/// allocation), and the options would then go to `srun`.
fn hydra_ssh(plan: &MpiPlan) -> bool {
    plan.hosts.is_some()
        && plan.ssh_given
        && !plan.extra_args.iter().any(|a| {
            ["-launcher", "--launcher", "-bootstrap", "--bootstrap"]
                .iter()
                .any(|f| a.starts_with(f))
        })
}

/// Variables for mpirun itself (not forwarded to the ranks): Hydra's ssh options, unless the
/// user set them (`user_set`).
pub(crate) fn mpirun_env(flavor: Flavor, plan: &MpiPlan, user_set: bool) -> Vec<(String, String)> {
    if flavor == Flavor::Hydra && hydra_ssh(plan) && !user_set {
        vec![("HYDRA_LAUNCHER_EXTRA_ARGS".to_owned(), plan.ssh.join(" "))]
    } else {
        Vec::new()
    }
}

fn host_list(hosts: &[(String, u32)]) -> String {
    hosts
        .iter()
        .map(|(h, n)| format!("{h}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// How long mpirun's output may keep draining after it exits.
const OUTPUT_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Each rank's `stdout` and `stderr` files under `--output-filename DIR` (None without it).
type RankFiles = (Vec<File>, Vec<File>);

fn output_files(plan: &MpiPlan) -> std::io::Result<Option<RankFiles>> {
    let Some(dir) = &plan.output_dir else {
        return Ok(None);
    };
    let (mut outs, mut errs) = (Vec::new(), Vec::new());
    for rank in 0..plan.np {
        let d = dir.join(output::rank_dir(rank, plan.np));
        std::fs::create_dir_all(&d)?;
        outs.push(File::create(d.join("stdout"))?);
        errs.push(File::create(d.join("stderr"))?);
    }
    Ok(Some((outs, errs)))
}

/// Runs the job through mpirun and returns the exit code for the launcher.
pub(crate) fn run(plan: &MpiPlan, secret: &[u8]) -> i32 {
    let mpirun = match find_mpirun() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("horovodrun: {e}");
            return 1;
        }
    };
    let flavor = match Mpirun::at(mpirun.clone()) {
        Ok(m) => m.flavor,
        Err(e) => {
            eprintln!("horovodrun: --mpi: {e}");
            return 1;
        }
    };
    let store = match StoreServer::start(SocketAddr::from((plan.listen_ip, 0)), secret.to_vec()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("horovodrun: cannot start the rendezvous store: {e}");
            return 1;
        }
    };
    let env = rank_env(plan, store.addr(), &hex::encode(secret), std::env::vars());
    let names: Vec<String> = env.iter().map(|(k, _)| k.clone()).collect();
    let root = sys::is_root();
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let args = arguments(flavor, plan, &names, root, cores);
    tracing::info!(mpirun = %mpirun.display(), ?flavor, args = ?args, "starting the job through mpirun");

    // Catch Ctrl-C and SIGTERM before mpirun exists, to hand them on to it: mpirun stops
    // every rank on every host.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("horovodrun: cannot install signal handlers: {e}");
            return 1;
        }
    };
    let own = mpirun_env(
        flavor,
        plan,
        std::env::var_os("HYDRA_LAUNCHER_EXTRA_ARGS").is_some(),
    );
    let files = match output_files(plan) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("horovodrun: --output-filename: {e}");
            return 1;
        }
    };
    let through_us = files.is_some() || plan.timestamps;
    let mut cmd = Command::new(&mpirun);
    cmd.args(&args).envs(env).envs(own);
    if through_us {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("horovodrun: cannot start {}: {e}", mpirun.display());
            return 1;
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut pumps = Vec::new();
    if through_us {
        let (outs, errs) = files.unwrap_or_default();
        let streams = [
            (
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
                Stream::Stdout,
                outs,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
                Stream::Stderr,
                errs,
            ),
        ];
        for (pipe, stream, f) in streams {
            if let Some(pipe) = pipe {
                match output::demux(pipe, stream, f, plan.timestamps) {
                    Ok(h) => pumps.push(h),
                    Err(e) => eprintln!("horovodrun: cannot copy mpirun's output: {e}"),
                }
            }
        }
    }
    let handle = signals.handle();
    let forwarder = thread::spawn(move || {
        let mut first = None;
        for s in signals.forever() {
            first.get_or_insert(s);
            sys::signal_child(pid, s);
        }
        first
    });
    let status = child.wait();
    // mpirun's pipes close when it exits, unless something it started still holds them: the
    // output drains for a little while, never forever.
    let until = std::time::Instant::now() + OUTPUT_DRAIN;
    while std::time::Instant::now() < until && pumps.iter().any(|p| !p.is_finished()) {
        thread::sleep(std::time::Duration::from_millis(5));
    }
    for p in pumps.into_iter().filter(|p| p.is_finished()) {
        let _ = p.join();
    }
    handle.close();
    let signalled = forwarder.join().ok().flatten();
    drop(store);
    match (status, signalled) {
        // Stopped on purpose: the launcher's own convention (as without --mpi), not mpirun's
        // status, which says 1 as if a rank had failed, and which Hydra sometimes gives as 0
        // after passing Ctrl-C on (seen once in the multi-host test).
        (Ok(_), Some(sig)) => {
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            eprintln!("horovodrun: received {name}; mpirun stopped the job");
            128 + sig
        }
        (Ok(s), None) if s.success() => 0,
        (Ok(s), None) => {
            use std::os::unix::process::ExitStatusExt;
            let code = s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
            eprintln!(
                "horovodrun: mpirun exited with status {code}; the ranks' output above says which \
                 rank failed"
            );
            code.clamp(1, 255)
        }
        (Err(e), _) => {
            eprintln!("horovodrun: waiting for mpirun failed: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests;
