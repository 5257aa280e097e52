//! The collectives conformance table (`hora::collectives::conformance`) in real processes,
//! on the collectives the engine would run: `horovodrun -np N hora-conformance`.
//!
//! The rank connects exactly as `hora::init` does (`backend::connect`: TCP, shared
//! memory when every rank is on this host, MPI under mpirun in an MPI build) but runs the
//! table on the chosen collectives directly, without the engine. Each rank prints
//! `rank R: collectives conformance over T OK` or its first wrong result, and exits non-zero.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use hora::collectives::Collectives;
use hora::collectives::conformance::{Member, run_rank};
use hora::config::Config;

fn main() -> ExitCode {
    let connected = match Config::from_env().and_then(|c| hora::backend::connect(&c, 0)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hora-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    let conn = connected;
    let t = conn.transport.clone();
    let rank = t.rank();
    let c: Arc<dyn Collectives> = Arc::from(conn.collectives);
    let member = Member::new(c, move |reason| t.abort(reason));
    match run_rank(&member) {
        Ok(()) => {
            println!("rank {rank}: collectives conformance over {} OK", conn.name);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "rank {rank}: collectives conformance over {} FAILED: {e}",
                conn.name
            );
            ExitCode::from(1)
        }
    }
}
