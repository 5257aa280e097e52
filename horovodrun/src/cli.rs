//! Command-line parsing. Horovod users type `-np 4`, a multi-letter flag with one dash that clap
//! does not model, so [`normalize`] rewrites it to `--num-proc` before clap sees the arguments.

use std::ffi::OsString;

use clap::Parser;

/// Launch the ranks of a hora (Horovod-compatible) job.
#[derive(Debug, Parser)]
#[command(
    name = "horovodrun",
    version,
    about = "Launch the ranks of a hora (Horovod-compatible) distributed training job.",
    after_help = "Example: horovodrun -np 4 python train.py"
)]
pub(crate) struct Args {
    /// Number of ranks to start (also spelled -np).
    #[arg(long = "num-proc", visible_alias = "np", value_name = "N", required = true,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub(crate) num_proc: u32,

    /// Hosts and their slots, e.g. `localhost:4` (only local hosts in this release).
    #[arg(short = 'H', long = "hosts", value_name = "HOST:SLOTS,...")]
    pub(crate) hosts: Option<String>,

    /// Seconds ranks may take to find each other at start (passed as HOROVOD_START_TIMEOUT).
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) start_timeout: u64,

    /// Seconds the other ranks get to exit on their own after one fails, before SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = parse_seconds)]
    pub(crate) grace_period: f64,

    /// Log what the launcher does (never the job secret).
    #[arg(long)]
    pub(crate) verbose: bool,

    /// The command each rank runs, and its arguments.
    #[arg(value_name = "COMMAND", required = true, num_args = 1.., trailing_var_arg = true)]
    pub(crate) command: Vec<OsString>,
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
    "--start-timeout",
    "--grace-period",
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
