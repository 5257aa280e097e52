//! Command-line parsing. Horovod users type `-np 4`, a multi-letter flag with one dash that clap
//! does not model, so [`normalize`] rewrites it to `--num-proc` before clap sees the arguments.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

/// Launch the ranks of a hora (Horovod-compatible) job.
#[derive(Debug, Parser)]
#[command(
    name = "horovodrun",
    version,
    about = "Launch the ranks of a hora (Horovod-compatible) distributed training job.",
    after_help = "Examples:\n  horovodrun -np 4 python train.py\n  \
                  horovodrun -np 8 -H node1:4,node2:4 python train.py\n  \
                  horovodrun -np 8 --hostfile hosts.txt -x NCCL_DEBUG python train.py"
)]
pub(crate) struct Args {
    /// Number of ranks to start (also spelled -np).
    #[arg(long = "num-proc", visible_alias = "np", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65_536),
          help_heading = "Placement")]
    pub(crate) num_proc: Option<u32>,

    /// Hosts and their slots, e.g. `node1:2,node2:2` (default `localhost:N`).
    #[arg(
        short = 'H',
        long = "hosts",
        value_name = "HOST:SLOTS,...",
        conflicts_with = "hostfile",
        help_heading = "Placement"
    )]
    pub(crate) hosts: Option<String>,

    /// A file of `host slots=N` lines (`#` comments and blank lines allowed).
    #[arg(long = "hostfile", value_name = "FILE", help_heading = "Placement")]
    pub(crate) hostfile: Option<PathBuf>,

    /// ssh port of the remote hosts.
    #[arg(
        short = 'p',
        long = "ssh-port",
        value_name = "PORT",
        help_heading = "Remote hosts (ssh)"
    )]
    pub(crate) ssh_port: Option<u16>,

    /// ssh private key for the remote hosts.
    #[arg(
        short = 'i',
        long = "ssh-identity-file",
        value_name = "FILE",
        help_heading = "Remote hosts (ssh)"
    )]
    pub(crate) ssh_identity_file: Option<PathBuf>,

    /// An ssh client configuration file (passed to ssh as -F).
    #[arg(
        long = "ssh-config-file",
        value_name = "FILE",
        help_heading = "Remote hosts (ssh)"
    )]
    pub(crate) ssh_config_file: Option<PathBuf>,

    /// Network interface the store and the ranks listen on (e.g. eth0); default: the one that
    /// routes to the other hosts (loopback for a local job).
    #[arg(
        long = "network-interface",
        value_name = "NIC",
        help_heading = "Remote hosts (ssh)"
    )]
    pub(crate) network_interface: Option<String>,

    /// Seconds for hosts to answer ssh and ranks to find each other at start.
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..), help_heading = "Job")]
    pub(crate) start_timeout: u64,

    /// Seconds the other ranks get to exit on their own after one fails, before SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = parse_seconds,
          help_heading = "Job")]
    pub(crate) grace_period: f64,

    /// Forward a variable to every rank: `NAME` (its value here) or `NAME=VALUE`. Repeatable.
    #[arg(short = 'x', long = "env", value_name = "NAME[=VALUE]", value_parser = parse_env_arg,
          help_heading = "Job")]
    pub(crate) env: Vec<(String, String)>,

    /// Also write each rank's output to DIR/rank.N/{stdout,stderr}.
    #[arg(long = "output-filename", value_name = "DIR", help_heading = "Job")]
    pub(crate) output_filename: Option<PathBuf>,

    /// Use the TCP transport (the default).
    #[arg(long, conflicts_with = "mpi", help_heading = "Transport")]
    pub(crate) tcp: bool,

    /// Start the ranks with mpirun (Open MPI or MPICH; `HORA_MPIRUN` picks one). Ranks built
    /// with hora's `mpi` feature then use the MPI transport, others TCP through this
    /// launcher's store.
    #[arg(long, help_heading = "Transport")]
    pub(crate) mpi: bool,
    /// Extra mpirun arguments for --mpi, split at spaces, e.g. "--bind-to core" (replaces
    /// horovodrun's `--bind-to none`) or "--mca btl self,vader".
    #[arg(
        long,
        value_name = "ARGS",
        allow_hyphen_values = true,
        requires = "mpi",
        help_heading = "Transport"
    )]
    pub(crate) mpi_args: Option<String>,

    /// Turn the response cache off (HOROVOD_CACHE_CAPACITY=0).
    #[arg(long, help_heading = "Tuning")]
    pub(crate) disable_cache: bool,

    /// Fusion buffer size in MiB (HOROVOD_FUSION_THRESHOLD).
    #[arg(long, value_name = "MB", help_heading = "Tuning")]
    pub(crate) fusion_threshold_mb: Option<u64>,

    /// Cycle time in ms (HOROVOD_CYCLE_TIME); accepted for Horovod compatibility, no effect.
    #[arg(long, value_name = "MS", value_parser = parse_positive, help_heading = "Tuning")]
    pub(crate) cycle_time_ms: Option<f64>,

    /// Response cache entries (HOROVOD_CACHE_CAPACITY).
    #[arg(long, value_name = "N", help_heading = "Tuning")]
    pub(crate) cache_capacity: Option<u64>,

    /// Write a Chrome-trace timeline here (HOROVOD_TIMELINE).
    #[arg(long, value_name = "FILE", help_heading = "Tuning")]
    pub(crate) timeline_filename: Option<PathBuf>,

    /// Log level of the ranks (HOROVOD_LOG_LEVEL: trace, debug, info, warning, error, fatal).
    #[arg(long, value_name = "LEVEL", value_parser = ["trace", "debug", "info", "warning", "warn", "error", "fatal"],
          help_heading = "Tuning")]
    pub(crate) log_level: Option<String>,

    /// Hierarchical allreduce across hosts (HOROVOD_HIERARCHICAL_ALLREDUCE=1). Without the
    /// flag the ranks choose: on when the job spans hosts with several ranks on each; turn it
    /// off with `-x HOROVOD_HIERARCHICAL_ALLREDUCE=0`.
    #[arg(long, help_heading = "Tuning")]
    pub(crate) hierarchical_allreduce: bool,

    /// Hierarchical allgather across hosts (HOROVOD_HIERARCHICAL_ALLGATHER=1); chosen like
    /// --hierarchical-allreduce without the flag.
    #[arg(long, help_heading = "Tuning")]
    pub(crate) hierarchical_allgather: bool,

    /// Print which transports, frameworks and features this build has, then exit.
    #[arg(long, help_heading = "Information")]
    pub(crate) check_build: bool,

    /// Log what the launcher does (never the job secret).
    #[arg(long, help_heading = "Information")]
    pub(crate) verbose: bool,

    /// The command each rank runs, and its arguments.
    #[arg(value_name = "COMMAND", num_args = 1.., trailing_var_arg = true,
          required_unless_present = "check_build")]
    pub(crate) command: Vec<OsString>,
}

fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}

/// `NAME` (value taken from the launcher's environment) or `NAME=VALUE`.
fn parse_env_arg(s: &str) -> Result<(String, String), String> {
    let (name, value) = match s.split_once('=') {
        Some((n, v)) => (n, Some(v.to_owned())),
        None => (s, None),
    };
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("`{name}` is not a variable name"));
    }
    let value = match value {
        Some(v) => v,
        None => std::env::var(name)
            .map_err(|_| format!("`{name}` is not set here, so it cannot be forwarded"))?,
    };
    Ok((name.to_owned(), value))
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "`{s}` is not a number of seconds between 0 and 86400"
        )),
    }
}

/// Options of ours that consume the next argument as their value.
const TAKES_VALUE: &[&str] = &[
    "-np",
    "--num-proc",
    "--np",
    "-H",
    "--hosts",
    "--hostfile",
    "-p",
    "--ssh-port",
    "-i",
    "--ssh-identity-file",
    "--ssh-config-file",
    "--network-interface",
    "--start-timeout",
    "--grace-period",
    "-x",
    "--env",
    "--output-filename",
    "--fusion-threshold-mb",
    "--cycle-time-ms",
    "--cache-capacity",
    "--timeline-filename",
    "--log-level",
    "--mpi-args",
];

/// Rewrites Horovod's `-np N` / `-np=N` into `--num-proc`, leaving the rank command untouched:
/// the scan stops at `--` or at the first argument that is neither an option nor an option's
/// value, which is where the command starts.
pub(crate) fn normalize(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut it = args.into_iter();
    if let Some(prog) = it.next() {
        out.push(prog);
    }
    let mut in_options = true;
    let mut value_next = false;
    for a in it {
        if !in_options {
            out.push(a);
            continue;
        }
        if value_next {
            value_next = false;
            out.push(a);
            continue;
        }
        let s = a.to_string_lossy();
        if s == "--" || !s.starts_with('-') || s == "-" {
            in_options = false;
            out.push(a);
            continue;
        }
        if s == "-np" {
            out.push("--num-proc".into());
            value_next = true;
        } else if let Some(v) = s.strip_prefix("-np=") {
            out.push(format!("--num-proc={v}").into());
        } else {
            value_next = TAKES_VALUE.contains(&&*s);
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests;
