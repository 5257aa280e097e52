//! Process-set scenarios: every collective on sets of even and odd ranks, sets running beside
//! the global set, and each way of getting a set wrong (answered on every rank, never a hang).

use hora::api;
use hora::{Error, ReduceOp};

use super::{check, fail};

fn e(err: Error) -> String {
    err.to_string()
}

/// Expects `r` to fail with a message containing `want`.
fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, Error>, want: &str) -> Result<(), String> {
    match r {
        Ok(v) => fail(format!("{what}: succeeded with {v:?}, expected an error")),
        Err(err) if err.to_string().contains(want) => Ok(()),
        Err(err) => fail(format!("{what}: error {err} does not say {want:?}")),
    }
}

/// Every collective on this rank's set (evens or odds), against values computed here.
fn collectives_on(set: &hora::ProcessSet, rank: usize) -> Result<(), String> {
    let id = set.id;
    let members = &set.ranks;
    let n = members.len();
    let sum: f64 = members.iter().map(|&r| r as f64).sum();
    for len in [1usize, 1000, 300_001] {
        let v: Vec<f64> = vec![rank as f64; len];
        let out = api::allreduce_in(id, &format!("set.ar.{len}"), v, ReduceOp::Sum).map_err(e)?;
        check(
            &format!("set {id} allreduce len {len}"),
            out,
            vec![sum; len],
        )?;
    }
    let avg =
        api::allreduce_in(id, "set.avg", vec![rank as f32; 4], ReduceOp::Average).map_err(e)?;
    check("set average", avg, vec![(sum / n as f64) as f32; 4])?;
    let gathered = api::allgather_in(id, "set.ag", vec![rank as i64; 2]).map_err(e)?;
    let want: Vec<i64> = members.iter().flat_map(|&r| [r as i64; 2]).collect();
    check("set allgather", gathered, want)?;
    for &root in members {
        let b = api::broadcast_in(id, &format!("set.bc.{root}"), vec![rank as i32; 3], root)
            .map_err(e)?;
        check(
            &format!("set broadcast from global rank {root}"),
            b,
            vec![root as i32; 3],
        )?;
    }
    // One element to each member, tagged with sender and receiver.
    let mine = set.rank_of(rank).expect("a member");
    let send: Vec<i64> = (0..n).map(|d| (rank * 100 + d) as i64).collect();
    let (got, splits) = api::alltoall_in(id, "set.a2a", send, vec![1; n]).map_err(e)?;
    let want: Vec<i64> = members.iter().map(|&s| (s * 100 + mine) as i64).collect();
    check("set alltoall", got, want)?;
    check("set alltoall splits", splits, vec![1; n])?;
    let share =
        api::reducescatter_in(id, "set.rs", vec![1.0f32; 2 * n], ReduceOp::Sum).map_err(e)?;
    check("set reducescatter", share, vec![n as f32; 2])?;
    api::barrier_in(id).map_err(e)?;
    Ok(())
}

/// Dynamic sets (HOROVOD_DYNAMIC_PROCESS_SETS=1): evens and odds, used, misused, removed.
pub(super) fn dynamic() -> Result<(), String> {
    let rank = api::rank().map_err(e)?;
    let size = api::size().map_err(e)?;
    let evens: Vec<usize> = (0..size).step_by(2).collect();
    let odds: Vec<usize> = (1..size).step_by(2).collect();
    let even = api::add_process_set(&evens).map_err(e)?;
    let odd = api::add_process_set(&odds).map_err(e)?;
    check("ids", (even.id, odd.id), (1, 2))?;
    let (mine, other) = if rank % 2 == 0 {
        (&even, &odd)
    } else {
        (&odd, &even)
    };
    check("rank in set", mine.rank_of(rank), Some(rank / 2))?;

    collectives_on(mine, rank)?;

    // A set's collective in flight while the global set runs one: neither waits on the other.
    let h_set = api::allreduce_async_in(mine.id, "beside.set", vec![1u8; 1 << 20], ReduceOp::Sum)
        .map_err(e)?;
    let global = api::allreduce("beside.global", vec![1i32; 1000], ReduceOp::Sum).map_err(e)?;
    check("global beside a set", global, vec![size as i32; 1000])?;
    let mut c = h_set.wait().map_err(e)?;
    let v = c.take_data::<Vec<u8>>().ok_or("set result type")?;
    check("set beside global", v, vec![mine.size() as u8; 1 << 20])?;

    // Misuse, each refused on the rank that made it.
    refused(
        "a collective on a set this rank is not in",
        api::allreduce_in(other.id, "not.mine", vec![1.0f32], ReduceOp::Sum),
        &format!("rank {rank} is not in process set {}", other.id),
    )?;
    refused(
        "a broadcast root outside the set",
        api::broadcast_in(mine.id, "bad.root", vec![0u8], other.ranks[0]),
        "a root must be a member",
    )?;
    refused(
        "an unknown set",
        api::allreduce_in(99, "no.set", vec![1.0f32], ReduceOp::Sum),
        "there is no process set 99",
    )?;
    refused(
        "a duplicate set",
        api::add_process_set(&evens),
        "already has ranks",
    )?;

    // Ranks that disagree, and a rank with an invalid list: every rank gets the error.
    let proposal = if rank == 0 {
        (0..size).collect()
    } else {
        vec![0]
    };
    refused(
        "disagreeing ranks",
        api::add_process_set(&proposal),
        "ranks disagree",
    )?;
    let proposal = if rank == 0 {
        vec![0, size + 5]
    } else {
        vec![0]
    };
    let want = if rank == 0 {
        format!("rank {} is not in this job", size + 5)
    } else {
        "rank(s) [0] gave an invalid list".to_string()
    };
    refused(
        "an invalid list on rank 0",
        api::add_process_set(&proposal),
        &want,
    )?;

    // Removing a set with an operation in flight (on rank 0 only) is refused everywhere;
    // once the other even ranks join that operation, the set goes. It needs a second even
    // rank (np >= 3): in a one-rank set the operation completes at once.
    if even.size() > 1 {
        let pending = if rank == 0 {
            Some(
                api::allreduce_async_in(even.id, "pending", vec![1.0f32], ReduceOp::Sum)
                    .map_err(e)?,
            )
        } else {
            None
        };
        refused(
            "remove with work in flight",
            api::remove_process_set(even.id),
            "in flight (rank 0: 1)",
        )?;
        if let Some(h) = pending {
            h.wait().map_err(e)?;
        } else if rank % 2 == 0 {
            api::allreduce_in(even.id, "pending", vec![1.0f32], ReduceOp::Sum).map_err(e)?;
        }
    }
    api::remove_process_set(odd.id).map_err(e)?;
    api::remove_process_set(even.id).map_err(e)?;
    refused(
        "remove the global set",
        api::remove_process_set(0),
        "cannot be removed",
    )?;
    refused(
        "a removed set",
        api::allreduce_in(mine.id, "gone", vec![1u8], ReduceOp::Sum),
        "no process set",
    )?;
    check("sets left", api::process_sets().map_err(e)?.len(), 1)?;
    // A new set after removals gets a fresh id (ranks given in any order) and works.
    let rest = api::add_process_set(&(1..size).rev().collect::<Vec<_>>()).map_err(e)?;
    check(
        "fresh id",
        (rest.id, rest.ranks.clone()),
        (3, (1..size).collect()),
    )?;
    if rank > 0 {
        let out = api::allreduce_in(rest.id, "fresh", vec![1i64], ReduceOp::Sum).map_err(e)?;
        check("fresh set", out, vec![size as i64 - 1])?;
    }
    Ok(())
}

/// Sets given at init (no HOROVOD_DYNAMIC_PROCESS_SETS): they work, and adding is refused.
pub(super) fn static_sets() -> Result<(), String> {
    let rank = api::rank().map_err(e)?;
    let sets = api::process_sets().map_err(e)?;
    check("set count", sets.len(), 3)?;
    let mine = sets[1..]
        .iter()
        .find(|s| s.rank_of(rank).is_some())
        .ok_or("in no set")?;
    collectives_on(mine, rank)?;
    refused(
        "add without dynamic sets",
        api::add_process_set(&[0]),
        "HOROVOD_DYNAMIC_PROCESS_SETS=1",
    )
}
