//! The collectives conformance table (`hora::collectives::conformance`) over MPI, one rank per
//! process: `mpirun -np N hora-mpi-collectives <native|ring|ring-small>`.
//!
//! - `native`: `MpiCollectives` behind `Dispatch`, the engine's choice under mpirun (MPI's own
//!   collectives, and hora's ring over the MPI transport for f16/bf16);
//! - `ring`: hora's ring algorithms over `MpiTransport` point-to-point messages;
//! - `ring-small`: the same with 4 KiB segments and no recursive doubling, so every size past
//!   4 KiB takes the pipelined ring paths.
//!
//! Each rank prints `rank R: collectives conformance (MODE) OK` or the first wrong result and
//! exits non-zero (aborting its transport, so its peers fail instead of hanging).
//! `HORA_CONFORMANCE_FAIL=R` makes rank R fail on purpose, to check that the job then ends.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use hora::collectives::conformance::{CHECKS, Seq};
use hora::collectives::{Collectives, Dispatch, Ring};
use hora_mpi::{MpiCollectives, MpiTransport};
use hora_transport::Transport;

fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "native".into());
    let t = match MpiTransport::world() {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("hora-mpi-collectives: cannot start MPI: {e}");
            return ExitCode::from(2);
        }
    };
    let c: Arc<dyn Collectives> = match mode.as_str() {
        "native" => {
            let ring = Ring::new(t.clone() as Arc<dyn Transport>).with_segment_bytes(1 << 20);
            Arc::new(Dispatch::new(
                Box::new(MpiCollectives::new(t.clone())),
                ring,
            ))
        }
        "ring" => Arc::new(Ring::new(t.clone())),
        "ring-small" => Arc::new(
            Ring::new(t.clone())
                .with_segment_bytes(4096)
                .with_small_allreduce_bytes(0),
        ),
        other => {
            eprintln!("hora-mpi-collectives: unknown mode {other:?} (native, ring, ring-small)");
            return ExitCode::from(2);
        }
    };
    let rank = t.rank();
    let verbose = std::env::var_os("HORA_CONFORMANCE_VERBOSE").is_some();
    let mut seq = Seq::default();
    for (name, check) in CHECKS {
        let start = std::time::Instant::now();
        // HORA_CONFORMANCE_FAIL=R: rank R fails instead of running the fourth check, while
        // its peers are inside it (the job must end, not hang).
        let injected = (name == &CHECKS[3].0
            && std::env::var("HORA_CONFORMANCE_FAIL").ok() == Some(rank.to_string()))
        .then(|| "injected failure".to_string());
        if let Some(e) = injected.map_or_else(|| check(&*c, &mut seq).err(), Some) {
            // One write: stderr is unbuffered, so eprintln! would write the pieces of the
            // line separately, and mpirun tags each piece it reads (`rank [1,1]<stderr>:1...`).
            let line =
                format!("rank {rank}: collectives conformance ({mode}) FAILED: {name}: {e}\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            // As the engine does: fail the peers' waits on this rank instead of leaving them.
            t.abort(&format!("rank {rank} failed {name}"));
            return ExitCode::from(1);
        }
        if verbose && rank == 0 {
            eprintln!("rank 0: {name} ok in {:?}", start.elapsed());
        }
    }
    println!("rank {rank}: collectives conformance ({mode}) OK");
    ExitCode::SUCCESS
}
