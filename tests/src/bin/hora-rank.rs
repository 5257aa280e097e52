//! A rank program for the multi-process tests: `horovodrun -np N hora-rank <scenario>`.
//!
//! Every scenario checks its own results and exits non-zero with a message on the first wrong
//! value, so a test only has to look at exit codes and output lines.

#![forbid(unsafe_code)]

#[path = "hora-rank/adasum.rs"]
mod adasum;
#[path = "hora-rank/autotune.rs"]
mod autotune;
#[path = "hora-rank/sets.rs"]
mod sets;

use std::process::ExitCode;
use std::time::Duration;

use hora::api;
use hora::{Error, ReduceOp};

fn fail(msg: String) -> Result<(), String> {
    Err(msg)
}

fn check<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        fail(format!("{what}: got {got:?}, want {want:?}"))
    }
}

/// Every collective, several sizes and dtypes, against values computed here.
fn collectives() -> Result<(), String> {
    let e = |e: Error| e.to_string();
    let rank = api::rank().map_err(e)?;
    let n = api::size().map_err(e)?;
    for len in [0usize, 1, 7, 1009, 100_003, 1 << 20] {
        let v: Vec<f32> = (0..len).map(|i| ((i % 13) + rank) as f32).collect();
        let out = api::allreduce(&format!("f32.{len}"), v, ReduceOp::Sum).map_err(e)?;
        for (i, x) in out.iter().enumerate() {
            let want = (0..n).map(|r| ((i % 13) + r) as f32).sum::<f32>();
            if *x != want {
                return fail(format!(
                    "allreduce f32 len {len} element {i}: {x} != {want}"
                ));
            }
        }
        let v: Vec<i64> = (0..len).map(|i| (i as i64) * (rank as i64 + 1)).collect();
        let out = api::allreduce(&format!("i64max.{len}"), v, ReduceOp::Max).map_err(e)?;
        check(
            "allreduce i64 max",
            out,
            (0..len).map(|i| i as i64 * n as i64).collect(),
        )?;
        let v = vec![half::bf16::from_f32(rank as f32 + 1.0); len];
        let out = api::allreduce(&format!("bf16min.{len}"), v, ReduceOp::Min).map_err(e)?;
        check(
            "allreduce bf16 min",
            out,
            vec![half::bf16::from_f32(1.0); len],
        )?;
        let out = api::allreduce(
            &format!("f64avg.{len}"),
            vec![rank as f64; len],
            ReduceOp::Average,
        )
        .map_err(e)?;
        let mean = (0..n).sum::<usize>() as f64 / n as f64;
        check("allreduce f64 average", out, vec![mean; len])?;
    }
    // Ragged allgather: rank r contributes r+1 values.
    let mine: Vec<i32> = (0..=rank as i32).map(|i| rank as i32 * 1000 + i).collect();
    let all = api::allgather("ragged", mine).map_err(e)?;
    let want: Vec<i32> = (0..n as i32)
        .flat_map(|r| (0..=r).map(move |i| r * 1000 + i))
        .collect();
    check("allgather", all, want)?;
    for root in 0..n {
        let v = vec![rank as u8; 33];
        check(
            "broadcast",
            api::broadcast(&format!("bcast.{root}"), v, root).map_err(e)?,
            vec![root as u8; 33],
        )?;
    }
    // Uneven alltoall: rank r sends d+1 elements to rank d.
    let splits: Vec<u64> = (0..n as u64).map(|d| d + 1).collect();
    let total: u64 = splits.iter().sum();
    let send: Vec<i32> = (0..total as i32).map(|_| rank as i32).collect();
    let (got, from) = api::alltoall("a2a", send, splits).map_err(e)?;
    check("alltoall splits", from, vec![rank as u64 + 1; n])?;
    check(
        "alltoall data",
        got,
        (0..n as i32)
            .flat_map(|s| std::iter::repeat_n(s, rank + 1))
            .collect(),
    )?;
    let rs = api::reducescatter("rs", vec![1.0f32; 10 * n + 1], ReduceOp::Sum).map_err(e)?;
    check(
        "reducescatter",
        rs,
        vec![n as f32; if rank == 0 { 11 } else { 10 }],
    )?;
    api::barrier().map_err(e)?;
    // Uneven work, then join.
    for s in 0..=rank {
        let out =
            api::allreduce(&format!("uneven.{s}"), vec![1.0f32; 5], ReduceOp::Sum).map_err(e)?;
        check("allreduce with joined ranks", out[0], (n - s) as f32)?;
    }
    check("join", api::join().map_err(e)?, n - 1)?;
    Ok(())
}

/// Allreduces in a loop; with `--slow-rank R` that rank sleeps between steps.
fn allreduce_loop(iters: usize) -> Result<(), String> {
    let e = |e: Error| e.to_string();
    let rank = api::rank().map_err(e)?;
    let n = api::size().map_err(e)?;
    for step in 0..iters {
        let out = api::allreduce("loop", vec![1.0f32; 1 << 16], ReduceOp::Sum).map_err(e)?;
        check("loop sum", out[0], n as f32)?;
        if step % 10 == 0 {
            println!("rank {rank} step {step}");
        }
        // HORA_RANK_DIE=R: rank R dies abruptly (as if killed) a few steps in, mid-job.
        if step == 5 && std::env::var("HORA_RANK_DIE").ok() == Some(rank.to_string()) {
            println!("rank {rank} dies now");
            std::process::abort();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `HORA_RANK_DIE=<rank>`: this rank SIGKILLs itself, as `kill -9` would.
fn die_if_chosen(rank: usize) {
    if std::env::var("HORA_RANK_DIE").ok() == Some(rank.to_string()) {
        println!("rank {rank} dies now");
        let me = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-9", &me])
            .status();
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// `HORA_RANK_DIE=R`: rank R is SIGKILLed right after init, before it ever talks to another
/// rank; the others start an allreduce, which must fail (the error ends up in the output).
fn early_death() -> Result<(), String> {
    let e = |e: Error| e.to_string();
    let rank = api::rank().map_err(e)?;
    die_if_chosen(rank);
    api::allreduce("after-death", vec![1.0f32; 1024], ReduceOp::Sum).map_err(e)?;
    fail("an allreduce with a dead rank succeeded".into())
}

/// Without the engine: connects as `hora::init` does, then runs one ring allreduce over the
/// transport, so each rank receives from the rank before it; its pieces are small enough for
/// the socket buffers, so a rank's first send completes at once and only its receive waits.
/// `HORA_RANK_DIE=R`: rank R is SIGKILLed right after connecting, before any ring neighbour
/// talked to it. A survivor aborts its transport on failure, as the engine does, so the
/// others stop too.
fn ring_early_death() -> Result<(), String> {
    use hora::collectives::{Collectives, Ring};
    let e = |e: Error| e.to_string();
    let config = hora::config::Config::from_env().map_err(e)?;
    let conn = hora::backend::connect(&config, 0).map_err(e)?;
    let t = conn.transport;
    let rank = t.rank();
    die_if_chosen(rank);
    let mut buf = vec![0u8; hora::collectives::DEFAULT_SMALL_ALLREDUCE_BYTES + 4096];
    let deadline = std::time::Instant::now() + config.tuning.op_timeout;
    let res =
        Ring::new(t.clone()).allreduce(&mut buf, hora::DataType::F32, ReduceOp::Sum, 1, deadline);
    match res {
        Ok(()) => fail("a ring allreduce with a dead rank succeeded".into()),
        Err(err) => {
            t.abort(&err.to_string());
            fail(format!("ring allreduce: {err}"))
        }
    }
}

/// Shapes differ by rank: every rank must get an error naming the tensor.
fn mismatch() -> Result<(), String> {
    let rank = api::rank().map_err(|e| e.to_string())?;
    match api::allreduce("grad/layer1.weight", vec![1.0f32; 4 + rank], ReduceOp::Sum) {
        Ok(_) => fail("a mismatched allreduce succeeded".into()),
        Err(err) => {
            println!("rank {rank} got the expected error: {err}");
            // The job goes on after the error.
            let ok = api::allreduce("after", vec![1.0f32; 3], ReduceOp::Sum)
                .map_err(|e| e.to_string())?;
            check("allreduce after mismatch", ok.len(), 3)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = args.first().map(String::as_str).unwrap_or("collectives");
    if scenario == "ring-early-death" {
        // No engine: `api::init` is not called.
        return match ring_early_death() {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => {
                let rank = std::env::var("HOROVOD_RANK").unwrap_or_default();
                eprintln!("rank {rank}: {scenario} FAILED: {msg}");
                ExitCode::from(3)
            }
        };
    }
    let started = if scenario == "static-sets" {
        // Evens and odds, known from the start (Horovod's `init(process_sets=...)`).
        hora::config::Config::from_env().and_then(|c| {
            let n = c.topology.size;
            let evens = (0..n).step_by(2).collect();
            let odds = (1..n).step_by(2).collect();
            api::init_with_process_sets(c, &[evens, odds])
        })
    } else {
        api::init()
    };
    if let Err(e) = started {
        eprintln!("hora-rank: init failed: {e}");
        return ExitCode::from(2);
    }
    let result = match scenario {
        "collectives" => collectives(),
        "loop" => allreduce_loop(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100)),
        "mismatch" => mismatch(),
        "early-death" => early_death(),
        "adasum" => adasum::adasum(),
        "process-sets" => sets::dynamic(),
        "layout" => api::is_homogeneous()
            .map(|h| println!("rank {}: homogeneous={h}", api::rank().unwrap_or(0)))
            .map_err(|e| e.to_string()),
        "static-sets" => sets::static_sets(),
        "autotune" => autotune::many_small(&args),
        other => fail(format!("unknown scenario {other:?}")),
    };
    let rank = api::rank().unwrap_or(usize::MAX);
    api::shutdown();
    match result {
        Ok(()) => {
            println!("rank {rank}: {scenario} OK");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("rank {rank}: {scenario} FAILED: {msg}");
            ExitCode::from(3)
        }
    }
}
