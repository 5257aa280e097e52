//! Faults: a rank that dies inside a collective must fail every other rank, fast and named.

use std::time::{Duration, Instant};

use hora_transport::CollectiveError;

use super::{Member, Options, Seq, call_err, deadline, on_threads};
use crate::types::{DataType, ReduceOp};

/// The collectives a dead rank is checked against, by name.
pub const FAULT_KINDS: [&str; 6] = [
    "allreduce",
    "allgatherv",
    "broadcast",
    "alltoallv",
    "reducescatter",
    "barrier",
];

/// For each collective and each job size in `opts.nps`: after one good call of it (so
/// connections exist), rank 1 aborts while the others are inside the collective (for
/// broadcast it is the root, so everyone needs it). Every other rank must fail — not hang,
/// not succeed — within `opts.fault_bound`, with an error naming rank 1 (see
/// [`Options::all_name_the_dead_rank`]). As the engine does, a rank that fails aborts itself.
pub fn dead_rank_fails_the_others(factory: &(dyn Fn(usize) -> Vec<Member> + Sync), opts: &Options) {
    let mut problems = Vec::new();
    for np in opts.nps.clone() {
        for kind in FAULT_KINDS {
            let victim = 1;
            let members = factory(np);
            let outcomes = on_threads(&members, |m| fault_rank(m, kind, victim));
            let mut named = 0;
            for (r, o) in outcomes.iter().enumerate() {
                if r == victim {
                    continue;
                }
                match o {
                    Err(e) => problems.push(format!("np {np} {kind} rank {r}: {e}")),
                    Ok((err, took)) => {
                        let names = err.peer() == Some(victim)
                            || err.to_string().contains(&format!("rank {victim}"));
                        named += usize::from(names);
                        if *took > opts.fault_bound {
                            problems.push(format!(
                                "np {np} {kind} rank {r}: failed only after {took:?}: {err}"
                            ));
                        }
                        if opts.all_name_the_dead_rank.contains(&kind) && !names {
                            problems.push(format!(
                                "np {np} {kind} rank {r}: error does not name rank {victim}: {err}"
                            ));
                        }
                    }
                }
            }
            if named == 0 {
                problems.push(format!(
                    "np {np} {kind}: no rank's error names the dead rank {victim}: {:?}",
                    outcomes
                        .iter()
                        .map(|o| o.as_ref().map(|(e, _)| e.to_string()))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dead_rank_fails_the_others:\n  {}",
        problems.join("\n  ")
    );
}

/// One rank of a fault scenario: `Ok((error, time to fail))` for a survivor that failed.
fn fault_rank(
    m: &Member,
    kind: &str,
    victim: usize,
) -> Result<(CollectiveError, Duration), String> {
    let c = m.collectives();
    let (me, np) = (c.rank(), c.size());
    let mut seq = Seq::default();
    let len = (1 << 20) + 4;
    let run = |s: u64| {
        let dl = deadline();
        match kind {
            "allreduce" => c.allreduce(&mut vec![1u8; len], DataType::F32, ReduceOp::Sum, s, dl),
            "allgatherv" => {
                let sizes = vec![len; np];
                c.allgatherv(&vec![1u8; len], &mut vec![0u8; len * np], &sizes, s, dl)
            }
            "broadcast" => c.broadcast(&mut vec![0u8; len], victim, s, dl),
            "alltoallv" => {
                let split = vec![len / np / 4 * 4; np];
                let total = split.iter().sum();
                c.alltoallv(
                    &vec![1u8; total],
                    &split,
                    &mut vec![0u8; total],
                    &split,
                    s,
                    dl,
                )
            }
            "reducescatter" => {
                let blocks = vec![len / 4 * 4; np];
                let total = blocks.iter().sum();
                let mut out = vec![0u8; blocks[me]];
                let (f, sum) = (DataType::F32, ReduceOp::Sum);
                c.reducescatter(&mut vec![0u8; total], &mut out, &blocks, f, sum, s, dl)
            }
            _ => c.barrier(s, dl),
        }
    };
    // The same call once with everyone: a job that ran it has made whatever connections it
    // needs (the TCP transport connects on first use, and a peer that dies before its first
    // contact is only seen at the deadline).
    run(seq.take()).map_err(|e| call_err(format!("{kind} with every rank alive"), e))?;
    if me == victim {
        // Let the others get inside the collective first.
        std::thread::sleep(Duration::from_millis(200));
        m.abort(&format!("rank {me} dies on purpose"));
        return Err("(the dead rank)".into());
    }
    let start = Instant::now();
    let res = run(seq.take());
    let took = start.elapsed();
    match res {
        Ok(()) => Err(format!("{kind} succeeded although rank {victim} was dead")),
        Err(e) => {
            m.abort(&format!("rank {me} failed: {e}"));
            Ok((e, took))
        }
    }
}
