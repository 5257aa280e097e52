//! Command-line parsing: every option of Horovod 0.28.1's `horovodrun`, plus hora's own
//! (`--ssh-config-file`, `--grace-period`, `-x`). Horovod spells some options with one dash and
//! several letters (`-np 4`, `-cb`, `-hostfile`, `-prefix-timestamp`), which clap does not
//! model, so [`normalize()`] rewrites them before clap sees the arguments.
//!
//! Parsing is in three steps: clap reads the flags ([`Args`]); [`tuning`] gathers the ones
//! that tune the ranks into [`tuning::Tunables`], which `--config-file` ([`config_file`])
//! completes (the command line wins); then every option hora cannot honour is refused with
//! the reason and what to use instead ([`tuning::Tunables::refusals`]). Nothing is accepted and ignored.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

pub(crate) mod config_file;
mod normalize;
pub(crate) mod tuning;

pub(crate) use normalize::normalize;

/// Launch the ranks of a hora (Horovod-compatible) job.
#[derive(Debug, Parser)]
#[command(
    name = "horovodrun",
    version,
    disable_version_flag = true,
    about = "Launch the ranks of a hora (Horovod-compatible) distributed training job.",
    after_help = "Examples:\n  horovodrun -np 4 python train.py\n  \
                  horovodrun -np 8 -H node1:4,node2:4 python train.py\n  \
                  horovodrun -np 8 --hostfile hosts.txt -x NCCL_DEBUG python train.py\n\n\
                  Options hora cannot honour (autotune, elastic, NCCL, ...) are refused with \
                  the reason and what to use instead; see docs/launching.md."
)]
pub(crate) struct Args {
    /// Print the version and exit (also spelled -v).
    #[arg(long = "version", action = clap::ArgAction::Version, help_heading = "Information")]
    pub(crate) version: Option<bool>,

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
        conflicts_with_all = ["hostfile", "host_discovery_script"],
        help_heading = "Placement"
    )]
    pub(crate) hosts: Option<String>,

    /// A file of `host slots=N` lines (`#` comments and blank lines allowed; also -hostfile).
    #[arg(
        long = "hostfile",
        value_name = "FILE",
        conflicts_with = "host_discovery_script",
        help_heading = "Placement"
    )]
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

    /// Network interfaces to use, comma-separated (e.g. "eth0,eth1"): on each host the first
    /// one it has is where the store and the ranks listen; default: the one that routes to
    /// the other hosts (loopback for a local job).
    #[arg(
        long = "network-interfaces",
        value_name = "NIC,...",
        help_heading = "Remote hosts (ssh)"
    )]
    pub(crate) network_interfaces: Vec<String>,

    /// One network interface (repeatable; a comma-separated list is taken too).
    #[arg(
        long = "network-interface",
        value_name = "NIC",
        help_heading = "Remote hosts (ssh)"
    )]
    pub(crate) network_interface: Vec<String>,

    /// Accepted for Horovod compatibility: horovodrun keeps no cache of its start-up checks
    /// (every launch probes ssh and routes afresh), so there is nothing to disable.
    #[arg(long, help_heading = "Job")]
    pub(crate) disable_cache: bool,

    /// Seconds for hosts to answer ssh and ranks to find each other at start (default:
    /// HOROVOD_START_TIMEOUT, else 30).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..),
          help_heading = "Job")]
    pub(crate) start_timeout: Option<u64>,

    /// Seconds the other ranks get to exit on their own after one fails, before SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = parse_seconds,
          help_heading = "Job")]
    pub(crate) grace_period: f64,

    /// Forward a variable to every rank: `NAME` (its value here) or `NAME=VALUE`. Repeatable.
    /// (The launcher's whole environment reaches every rank anyway, minus a deny list.)
    #[arg(short = 'x', long = "env", value_name = "NAME[=VALUE]", value_parser = parse_env_arg,
          help_heading = "Job")]
    pub(crate) env: Vec<(String, String)>,

    /// Also write each rank's output to DIR/rank.N/{stdout,stderr} (N zero-padded).
    #[arg(long = "output-filename", value_name = "DIR", help_heading = "Job")]
    pub(crate) output_filename: Option<PathBuf>,

    /// Start each output line with the local time (also -prefix-timestamp).
    #[arg(long = "prefix-output-with-timestamp", help_heading = "Job")]
    pub(crate) prefix_output_with_timestamp: bool,

    /// A YAML file of tuning settings, in Horovod's layout (params, timeline, stall_check,
    /// library_options, logging, autotune, controller); flags on the command line win.
    #[arg(long = "config-file", value_name = "FILE", help_heading = "Job")]
    pub(crate) config_file: Option<PathBuf>,

    /// Start the ranks with horovodrun's own launcher over TCP (the default; hora's
    /// counterpart of Gloo). The ranks get HOROVOD_CONTROLLER=gloo.
    #[arg(long, conflicts_with_all = ["mpi", "jsrun"], help_heading = "Transport")]
    pub(crate) gloo: bool,

    /// Start the ranks with mpirun (Open MPI or MPICH; `HORA_MPIRUN` picks one). Ranks built
    /// with hora's `mpi` feature then use the MPI transport, others TCP through this
    /// launcher's store.
    #[arg(long, conflicts_with = "jsrun", help_heading = "Transport")]
    pub(crate) mpi: bool,

    /// Start the ranks with IBM's jsrun (LSF): refused, see docs/launching.md.
    #[arg(long, help_heading = "Transport")]
    pub(crate) jsrun: bool,

    /// Extra mpirun arguments for --mpi, split at spaces, e.g. "--mca btl self,vader".
    #[arg(
        long,
        value_name = "ARGS",
        allow_hyphen_values = true,
        requires = "mpi",
        help_heading = "Transport"
    )]
    pub(crate) mpi_args: Option<String>,

    /// mpirun's process binding for --mpi, split at spaces, in place of horovodrun's
    /// `--bind-to none --map-by slot`, e.g. "--bind-to core --map-by core".
    #[arg(
        long,
        value_name = "ARGS",
        allow_hyphen_values = true,
        help_heading = "Transport"
    )]
    pub(crate) binding_args: Option<String>,

    /// Only TCP between hosts: sets NCCL_IB_DISABLE=1 for the ranks, as Horovod does (hora's
    /// own transports are TCP and shared memory anyway).
    #[arg(long, help_heading = "Transport")]
    pub(crate) tcp: bool,

    #[command(flatten)]
    pub(crate) tuning: tuning::TuningArgs,

    #[command(flatten)]
    pub(crate) elastic: tuning::ElasticArgs,

    /// Print which transports, frameworks and features this build has, then exit (also -cb).
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

impl Args {
    /// The network interfaces asked for, in order, each once (`--network-interfaces` and
    /// every `--network-interface`, commas split).
    pub(crate) fn nics(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let given = self
            .network_interfaces
            .iter()
            .chain(&self.network_interface);
        for nic in given.flat_map(|v| v.split(',')).map(str::trim) {
            if !nic.is_empty() && !out.iter().any(|n| n == nic) {
                out.push(nic.to_owned());
            }
        }
        out
    }

    /// `--start-timeout`, else `HOROVOD_START_TIMEOUT` (as Horovod reads it), else 30 s.
    pub(crate) fn start_timeout(&self, from_env: Option<&str>) -> Result<u64, String> {
        if let Some(t) = self.start_timeout {
            return Ok(t);
        }
        match from_env.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(30),
            Some(s) => match s.parse::<u64>() {
                Ok(t) if t >= 1 => Ok(t),
                _ => Err(format!(
                    "HOROVOD_START_TIMEOUT is `{s}`; it must be a whole number of seconds >= 1 \
                     (or use --start-timeout)"
                )),
            },
        }
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

#[cfg(test)]
mod table_tests;
#[cfg(test)]
mod tests;
