//! # horovodrun: hora's launcher
//!
//! ## Design overview
//! `horovodrun -np N [-H host:slots,...|--hostfile F] COMMAND...` starts N ranks of COMMAND on
//! this machine and, through ssh, on others, each with its HOROVOD_* placement variables, the
//! address of a rendezvous store the launcher serves, and the job secret (in the environment
//! only, sent to remote hosts on ssh's stdin). It prefixes their output Horovod-style, forwards
//! Ctrl-C and SIGTERM to every host, and fails fast: when one rank or host fails, the others are
//! stopped and the launcher exits non-zero naming the rank and host (the most likely root cause
//! first, when several fail at once: `failure`).
//!
//! With `--mpi` the ranks are started by `mpirun` instead (`launch_mpi`). It does not restart
//! failed ranks (elastic training). Every option of Horovod's `horovodrun` is taken (`cli`):
//! implemented, or refused with the reason and what to use instead (`options`).

// Every `unsafe` of the launcher is in `sys`, which says why each call is sound.
#![deny(unsafe_code)]

use std::net::{IpAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

mod check_build;
mod cli;
mod env;
mod failure;
mod hosts;
mod launch_local;
mod launch_mpi;
mod launch_ssh;
mod logging;
mod options;
mod output;
mod remote;
#[allow(unsafe_code)]
mod sys;

/// Exit code for bad usage, as clap uses.
const USAGE: u8 = 2;

fn usage(msg: &str) -> ExitCode {
    eprintln!("horovodrun: {msg}");
    ExitCode::from(USAGE)
}

/// What every step of a launch returns: its result, or the exit code to stop with (the
/// message already printed).
type Step<T> = Result<T, ExitCode>;

fn main() -> ExitCode {
    // sshd starts us as the wrapper of one remote rank.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == launch_ssh::REMOTE_FLAG)
    {
        return remote::main();
    }
    let args = match cli::Args::try_parse_from(cli::normalize(std::env::args_os())) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    logging::init(args.verbose);

    if args.check_build {
        print!("{}", check_build::report());
        return ExitCode::SUCCESS;
    }
    launch(&args).unwrap_or_else(|code| code)
}

/// Plans the job from the arguments, checks the hosts, then starts it with mpirun or ourselves.
fn launch(args: &cli::Args) -> Step<ExitCode> {
    let job =
        options::resolve(args, |k| std::env::var(k).ok(), options::on_path).map_err(|errors| {
            for e in &errors {
                eprintln!("horovodrun: {e}");
            }
            ExitCode::from(USAGE)
        })?;
    for n in &job.notes {
        eprintln!("horovodrun: {n}");
    }
    let Some(np) = args.num_proc else {
        return Err(usage("-np N is required (the number of ranks to start)"));
    };
    let slots = place(args, np)?;
    let remote_hosts = remote_hosts(&slots);
    let secret = secret_from_env()?;
    let ssh = ssh_options(args, &job, &slots, &remote_hosts);
    let listen_ip = listen_ip(&job, &remote_hosts, &ssh).map_err(|e| {
        eprintln!("horovodrun: {e}");
        ExitCode::from(1)
    })?;
    // mpirun's own ssh reaches the other hosts, with these options from our ssh flags.
    let mpi_ssh = if job.mpi {
        mpi_ssh_options(args, &job).inspect_err(|_| ssh.close())?
    } else {
        Vec::new()
    };
    check_reachable(&job, &ssh, &remote_hosts).inspect_err(|_| ssh.close())?;

    if job.mpi {
        ssh.close();
        return Ok(run_mpi(args, &job, np, &slots, listen_ip, mpi_ssh, &secret));
    }
    let code = run_local(args, &job, np, slots, listen_ip, &ssh, &secret);
    ssh.close();
    Ok(code)
}

/// Reads the host list (`-H`, `--hostfile`, or this machine alone) and gives each rank a slot.
fn place(args: &cli::Args, np: u32) -> Step<Vec<hosts::Slot>> {
    let listed = match (&args.hosts, &args.hostfile) {
        (Some(text), _) => hosts::parse(text),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => hosts::parse_hostfile(&path.display().to_string(), &text),
            Err(e) => {
                return Err(usage(&format!(
                    "cannot read --hostfile {}: {e}",
                    path.display()
                )));
            }
        },
        (None, None) => Ok(vec![hosts::HostSlots {
            host: "localhost".into(),
            slots: np,
        }]),
    };
    let hostname = sys::hostname();
    listed
        .map(|h| hosts::merge(&h, hostname.as_deref()))
        .and_then(|h| hosts::assign(&h, np))
        .map_err(|e| usage(&e.to_string()))
}

/// The hosts other than this one that got a slot, in slot order, each once.
fn remote_hosts(slots: &[hosts::Slot]) -> Vec<String> {
    let mut remote_hosts: Vec<String> = Vec::new();
    for s in slots.iter().filter(|s| s.host != "localhost") {
        if !remote_hosts.contains(&s.host) {
            remote_hosts.push(s.host.clone());
        }
    }
    remote_hosts
}

/// The job secret: `HOROVOD_SECRET_KEY` when set, else a fresh one.
fn secret_from_env() -> Step<Vec<u8>> {
    let from_env = match std::env::var_os("HOROVOD_SECRET_KEY") {
        None => None,
        Some(v) => match v.into_string() {
            Ok(s) => Some(s),
            Err(_) => return Err(usage("HOROVOD_SECRET_KEY is set but is not hex")),
        },
    };
    env::job_secret(from_env.as_deref()).map_err(|e| usage(&e))
}

/// Our ssh settings from the flags; with remote hosts, a control directory and the hosts whose
/// ranks can share one multiplexed connection.
fn ssh_options(
    args: &cli::Args,
    job: &options::Resolved,
    slots: &[hosts::Slot],
    remote_hosts: &[String],
) -> launch_ssh::SshOptions {
    let mut ssh = launch_ssh::SshOptions {
        port: args.ssh_port,
        identity: args.ssh_identity_file.clone(),
        config: args.ssh_config_file.clone(),
        connect_timeout_secs: job.start_timeout,
        control_dir: None,
        mux_hosts: Vec::new(),
    };
    if !remote_hosts.is_empty() {
        ssh.control_dir = control_dir();
        ssh.mux_hosts = remote_hosts
            .iter()
            .filter(|h| {
                slots.iter().filter(|s| &s.host == *h).count() as u32 <= launch_ssh::MAX_MUX_RANKS
            })
            .cloned()
            .collect();
    }
    ssh
}

/// The ssh options mpirun passes on, from our ssh flags.
fn mpi_ssh_options(args: &cli::Args, job: &options::Resolved) -> Step<Vec<String>> {
    launch_mpi::ssh_options(
        args.ssh_port,
        args.ssh_identity_file.as_deref(),
        args.ssh_config_file.as_deref(),
        job.start_timeout,
    )
    .map_err(|e| usage(&e))
}

/// Fails, naming them, when remote hosts do not answer ssh within the start timeout.
fn check_reachable(
    job: &options::Resolved,
    ssh: &launch_ssh::SshOptions,
    remote_hosts: &[String],
) -> Step<()> {
    // Also before mpirun, as Horovod does: a host that does not answer is named here, where
    // mpirun would print a generic daemon failure (Open MPI) or hang (MPICH's Hydra).
    if remote_hosts.is_empty() {
        return Ok(());
    }
    let bad = launch_ssh::unreachable(ssh, remote_hosts, Duration::from_secs(job.start_timeout));
    if !bad.is_empty() {
        eprintln!(
            "horovodrun: {} of {} hosts cannot be reached over ssh within {} s (--start-timeout); no rank was started:",
            bad.len(),
            remote_hosts.len(),
            job.start_timeout
        );
        for (h, why) in &bad {
            eprintln!("horovodrun:   {h}: {why}");
        }
        return Err(ExitCode::from(1));
    }
    tracing::info!(hosts = ?remote_hosts, "every host answered ssh");
    Ok(())
}

/// Starts the job with mpirun and waits for it.
fn run_mpi(
    args: &cli::Args,
    job: &options::Resolved,
    np: u32,
    slots: &[hosts::Slot],
    listen_ip: IpAddr,
    mpi_ssh: Vec<String>,
    secret: &[u8],
) -> ExitCode {
    let plan = launch_mpi::MpiPlan {
        command: args.command.clone(),
        np,
        hosts: launch_mpi::MpiPlan::hosts_of(slots),
        listen_ip,
        nics: job.nics.clone(),
        binding: job.binding.clone(),
        output_dir: args.output_filename.clone(),
        timestamps: args.prefix_output_with_timestamp,
        start_timeout_secs: job.start_timeout,
        extra_env: job.env.clone(),
        extra_args: args
            .mpi_args
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        ssh: mpi_ssh,
        ssh_given: args.ssh_port.is_some()
            || args.ssh_identity_file.is_some()
            || args.ssh_config_file.is_some(),
    };
    let code = launch_mpi::run(&plan, secret);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Starts the ranks ourselves (here and over ssh) and waits for them.
fn run_local(
    args: &cli::Args,
    job: &options::Resolved,
    np: u32,
    slots: Vec<hosts::Slot>,
    listen_ip: IpAddr,
    ssh: &launch_ssh::SshOptions,
    secret: &[u8],
) -> ExitCode {
    let plan = launch_local::Plan {
        command: args.command.clone(),
        np,
        start_timeout_secs: job.start_timeout,
        grace: Duration::from_secs_f64(args.grace_period),
        slots,
        listen_ip,
        nic: (!job.nics.is_empty()).then(|| job.nics.join(",")),
        ssh: ssh.clone(),
        extra_env: job.env.clone(),
        output_dir: args.output_filename.clone(),
        timestamps: args.prefix_output_with_timestamp,
    };
    tracing::info!(np = plan.np, command = ?plan.command, %listen_ip, "launching ranks");
    let code = launch_local::run(&plan, secret);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// A private directory for ssh's shared-connection sockets (None: no multiplexing, e.g. when
/// the path would be too long for a unix socket).
fn control_dir() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    // Directories of launchers that were killed before they could remove theirs.
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix("horovodrun-ssh-"))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("horovodrun-ssh-{}", std::process::id()));
    // %C expands to 40 hex digits; sun_path holds 108 bytes.
    if dir.as_os_str().len() > 60 {
        return None;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir).ok()?;
    Some(dir)
}

/// Where the store and this machine's ranks listen: the chosen interface's address, else
/// loopback for a local job, else the address that routes to the first remote host.
fn listen_ip(
    job: &options::Resolved,
    remote_hosts: &[String],
    ssh: &launch_ssh::SshOptions,
) -> Result<IpAddr, String> {
    if !job.nics.is_empty() {
        let nics = job.nics.join(",");
        return match hora::config::net::first_interface_ip(job.nics.iter().map(String::as_str)) {
            Ok(Some((nic, ip))) => {
                tracing::info!(nic, %ip, "listening on the first interface asked for that is here");
                Ok(ip)
            }
            Ok(None) => Err(format!(
                "--network-interfaces {nics}: no such interface here, or none has an address"
            )),
            Err(e) => Err(format!(
                "--network-interfaces {nics}: cannot list interfaces: {e}"
            )),
        };
    }
    let Some(first) = remote_hosts.first() else {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    };
    let port = ssh.port.unwrap_or(22);
    let addr = (first.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve host `{first}`"))?;
    sys::route_to(addr).map_err(|e| format!("no route to host `{first}` ({addr}): {e}"))
}
