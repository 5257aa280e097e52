//! # horovodrun: hora's launcher
//!
//! ## Design overview
//! `horovodrun -np N [-H localhost:N] COMMAND...` starts N ranks of COMMAND on this machine,
//! each with its HOROVOD_* placement variables, the address of a rendezvous store the launcher
//! serves, and the job secret (in the environment only). It prefixes their output Horovod-style,
//! forwards Ctrl-C and SIGTERM, and fails fast: when one rank fails, the others are stopped and
//! the launcher exits non-zero naming the rank.
//!
//! It does not (yet) start ranks on other machines over ssh, restart failed ranks (elastic
//! training), or check builds (`--check-build`).

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod env;
mod hosts;
mod launch_local;
mod output;
mod sys;

/// Exit code for bad usage, as clap uses.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let args = match cli::Args::try_parse_from(cli::normalize(std::env::args_os())) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    init_logging(args.verbose);

    if let Some(text) = &args.hosts {
        let checked = hosts::parse(text)
            .and_then(|h| hosts::local_slots(&h, args.num_proc, sys::hostname().as_deref()));
        if let Err(e) = checked {
            eprintln!("horovodrun: {e}");
            return ExitCode::from(USAGE);
        }
    }

    let from_env = match std::env::var_os("HOROVOD_SECRET_KEY") {
        None => None,
        Some(v) => match v.into_string() {
            Ok(s) => Some(s),
            Err(_) => {
                eprintln!("horovodrun: HOROVOD_SECRET_KEY is set but is not hex");
                return ExitCode::from(USAGE);
            }
        },
    };
    let secret = match env::job_secret(from_env.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("horovodrun: {e}");
            return ExitCode::from(USAGE);
        }
    };

    let plan = launch_local::Plan {
        command: args.command,
        np: args.num_proc,
        start_timeout_secs: args.start_timeout,
        grace: std::time::Duration::from_secs_f64(args.grace_period),
    };
    tracing::info!(np = plan.np, command = ?plan.command, "launching ranks on this machine");
    let code = launch_local::run(&plan, &secret);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The launcher's own messages (and the store's warnings about refused connections) go to
/// stderr; --verbose adds what the launcher is doing.
fn init_logging(verbose: bool) {
    let level = if verbose {
        tracing::Level::INFO
    } else {
        tracing::Level::WARN
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .try_init();
}
