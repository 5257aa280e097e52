//! Coordinator tests: scenario tests here, the simulated cluster in `sim.rs`, properties in
//! `props.rs`.

mod groups;
mod props;
pub(crate) mod sim;

use std::time::{Duration, Instant};

use super::cache::ResponseCache;
use super::message::{DownItem, UpItem};
use super::negotiate::rank_list;
use super::{Coordinator, CoordinatorConfig, Knobs, Request, Response, Worker};
use crate::types::{CollectiveKind as K, DataType, ReduceOp};
use sim::{Mode, SimCluster};

/// An f32 allreduce request.
pub(crate) fn ar(name: &str, shape: &[u64]) -> Request {
    Request::new(name, K::Allreduce, DataType::F32, shape.to_vec())
}

/// A request of any kind.
pub(crate) fn req(name: &str, kind: K, shape: &[u64]) -> Request {
    Request::new(name, kind, DataType::F32, shape.to_vec())
}

/// Default config with the given cache capacity.
pub(crate) fn cfg(cache_capacity: usize) -> CoordinatorConfig {
    CoordinatorConfig {
        cache_capacity,
        ..CoordinatorConfig::default()
    }
}

/// Tensor names of a plan, flattened in execution order.
pub(crate) fn names(plan: &[Response]) -> Vec<String> {
    plan.iter()
        .flat_map(|r| r.tensors.iter().map(|t| t.name.clone()))
        .collect()
}

/// Asserts every live rank received the same plan and returns it.
pub(crate) fn same_plan(sim: &SimCluster, ranks: &[usize]) -> Vec<Response> {
    let first = &sim.plans[ranks[0]];
    for &r in &ranks[1..] {
        assert_eq!(
            &sim.plans[r], first,
            "rank {r} plan differs from rank {}",
            ranks[0]
        );
    }
    first.clone()
}

#[test]
fn two_ranks_allreduce_answered_once_fused() {
    let mut sim = SimCluster::new(2, cfg(1024), Mode::InOrder, 1);
    sim.submit(0, vec![ar("a", &[4]), ar("b", &[8])]);
    sim.submit(1, vec![ar("b", &[8])]);
    sim.run_until_idle();
    assert_eq!(
        names(&sim.plans[0]),
        ["b"],
        "b is ready on both ranks, a is not"
    );
    sim.submit(1, vec![ar("a", &[4]), ar("c", &[2])]);
    sim.submit(0, vec![ar("c", &[2])]);
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1]);
    assert_eq!(names(&plan), ["b", "a", "c"]);
    assert_eq!(plan.len(), 3, "a and c become ready separately: {plan:?}");
    assert_eq!(sim.coordinator.pending_names(), 0);
}

#[test]
fn names_ready_in_one_message_are_fused_in_ready_order() {
    let mut sim = SimCluster::new(2, cfg(1024), Mode::InOrder, 1);
    sim.submit(0, vec![ar("x", &[4]), ar("y", &[4]), ar("z", &[4])]);
    sim.submit(1, vec![ar("z", &[4]), ar("x", &[4]), ar("y", &[4])]);
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1]);
    assert_eq!(plan.len(), 1);
    assert_eq!(
        names(&plan),
        ["z", "x", "y"],
        "the last submitter's order decides readiness"
    );
}

#[test]
fn fusion_respects_threshold_and_dtype() {
    let config = CoordinatorConfig {
        fusion_threshold: 64,
        ..cfg(0)
    };
    let mut sim = SimCluster::new(2, config, Mode::InOrder, 1);
    let mut f64t = ar("d", &[2]);
    f64t.dtype = DataType::F64;
    let batch = vec![
        ar("a", &[8]),
        ar("b", &[8]),
        ar("c", &[8]),
        f64t,
        ar("big", &[100]),
        ar("e", &[1]),
    ];
    sim.submit(0, batch.clone());
    sim.submit(1, batch);
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1]);
    let groups: Vec<Vec<String>> = plan
        .iter()
        .map(|r| names(std::slice::from_ref(r)))
        .collect();
    // a+b = 64 bytes fills the threshold; c looks ahead past d (f64) and big (too big) to e.
    assert_eq!(
        groups,
        [vec!["a", "b"], vec!["c", "e"], vec!["d"], vec!["big"]]
    );
}

#[test]
fn steady_state_uses_cache_ids_and_small_messages() {
    let mut sim = SimCluster::new(2, cfg(1024), Mode::InOrder, 1);
    let batch: Vec<Request> = (0..4)
        .map(|i| ar(&format!("layer{i}.weight"), &[1024]))
        .collect();
    for _ in 0..3 {
        for r in 0..2 {
            sim.submit(r, batch.clone());
        }
        sim.run_until_idle();
    }
    assert_eq!(
        sim.stats.full_items, 8,
        "only the first iteration is sent in full"
    );
    assert_eq!(sim.stats.cached_items, 16);
    assert_eq!(sim.nodes[1].cached_entries(), 4);
    let up = crate::wire::encode_up(&sim.nodes[0].submit(vec![batch[0].clone()], false));
    assert!(
        up.len() <= 8,
        "a cached single-tensor UpMsg is {} bytes",
        up.len()
    );
    let plan = same_plan(&sim, &[0, 1]);
    assert_eq!(plan.len(), 3);
    assert!(
        plan.iter()
            .all(|r| r.tensors.len() == 4 && r.error.is_none())
    );
}

#[test]
fn autotune_knobs_switch_fusion_and_cache_at_one_message_on_every_rank() {
    let mut sim = SimCluster::new(3, cfg(1024), Mode::Shuffled, 5);
    let batch: Vec<Request> = (0..4).map(|i| ar(&format!("g{i}"), &[1024])).collect();
    let step = |sim: &mut SimCluster| {
        for r in 0..3 {
            sim.submit(r, batch.clone());
        }
        sim.run_until_idle();
    };
    step(&mut sim);
    step(&mut sim);
    assert_eq!(
        sim.stats.full_items, 12,
        "only the first step travels in full"
    );
    let off = Knobs {
        fusion_threshold: 8192,
        segment_bytes: 4096,
        cache_enabled: false,
    };
    sim.coordinator.set_knobs(off);
    sim.collect();
    sim.run_until_idle();
    let before = sim.plans[0].len();
    step(&mut sim);
    let plan = same_plan(&sim, &[0, 1, 2]);
    // 8 KiB holds two 4 KiB tensors: two fused responses instead of one.
    let sizes: Vec<usize> = plan[before..].iter().map(|r| r.tensors.len()).collect();
    assert_eq!(sizes, [2, 2]);
    assert_eq!(
        sim.stats.full_items, 24,
        "with the cache off every request is full"
    );
    // Every rank switched at the same message.
    assert_eq!(sim.knobs[0].len(), 1);
    assert!(
        sim.knobs.iter().all(|k| *k == sim.knobs[0]),
        "{:?}",
        sim.knobs
    );
    // Back on: the entries kept while off serve the next steps again.
    sim.coordinator.set_knobs(Knobs {
        cache_enabled: true,
        ..off
    });
    sim.collect();
    sim.run_until_idle();
    step(&mut sim);
    assert_eq!(sim.stats.full_items, 24);
    same_plan(&sim, &[0, 1, 2]);
}

#[test]
fn shape_change_of_cached_name_renegotiates() {
    let mut sim = SimCluster::new(2, cfg(1024), Mode::InOrder, 1);
    for shape in [[2u64, 3], [2, 3], [4, 3], [4, 3]] {
        sim.submit(0, vec![ar("w", &shape)]);
        sim.submit(1, vec![ar("w", &shape)]);
        sim.run_until_idle();
    }
    let plan = same_plan(&sim, &[0, 1]);
    let shapes: Vec<Vec<u64>> = plan.iter().map(|r| r.tensors[0].shape.clone()).collect();
    assert_eq!(shapes, [vec![2, 3], vec![2, 3], vec![4, 3], vec![4, 3]]);
    assert_eq!(
        sim.stats.cached_items, 4,
        "iterations 2 and 4 hit on both ranks; 3 is sent in full"
    );
}

#[test]
fn stale_cache_id_after_eviction_is_resolved_from_tombstone() {
    // Capacity 1: "b" evicts "a". Rank 1 still encodes "a" as its old id because it has not
    // applied the eviction yet; the coordinator must still understand it.
    let mut coord = Coordinator::new(2, cfg(1));
    let mut w = [Worker::new(0, 2, 1), Worker::new(1, 2, 1)];
    let t = Instant::now();
    let deliver = |coord: &mut Coordinator, w: &mut [Worker; 2]| {
        let mut out = Vec::new();
        while let Some(d) = coord.poll_transmit() {
            for wk in w.iter_mut() {
                out.push(wk.receive(d.clone()).unwrap());
            }
        }
        out
    };
    for (r, wk) in w.iter_mut().enumerate() {
        let m = wk.submit(vec![ar("a", &[1])], false);
        coord.handle_message(t, r, m);
    }
    deliver(&mut coord, &mut w);
    // Rank 1 encodes "a" from its cache now (epoch 1), but the message is held back.
    let stale = w[1].submit(vec![ar("a", &[1])], false);
    assert!(matches!(stale.items[0], UpItem::Cached(_)));
    for (r, wk) in w.iter_mut().enumerate() {
        let m = wk.submit(vec![ar("b", &[1])], false);
        coord.handle_message(t, r, m);
    }
    // Only rank 0 learns that "b" evicted "a".
    let mut coord_out = Vec::new();
    while let Some(d) = coord.poll_transmit() {
        coord_out.push(d.clone());
        w[0].receive(d).unwrap();
    }
    assert_eq!(coord.cache_stats(), (1, 1), "a is a tombstone now");
    let m0 = w[0].submit(vec![ar("a", &[1])], false);
    assert!(
        matches!(m0.items[0], UpItem::Full(_)),
        "rank 0 knows a was evicted"
    );
    coord.handle_message(t, 0, m0);
    coord.handle_message(t, 1, stale);
    for d in coord_out {
        w[1].receive(d).unwrap();
    }
    let plans = deliver(&mut coord, &mut w);
    assert_eq!(plans[0], plans[1]);
    assert_eq!(names(&plans[0].responses), ["a"]);
    assert!(plans[0].responses[0].error.is_none());
    // Both ranks report epochs past the eviction: the tombstone goes.
    for (r, wk) in w.iter_mut().enumerate() {
        let m = wk.submit(vec![], false);
        coord.handle_message(t, r, m);
    }
    assert_eq!(coord.cache_stats(), (1, 0));
}

#[test]
fn cache_ids_are_never_reused() {
    let mut cache = ResponseCache::new(2);
    let mut seen = std::collections::HashSet::new();
    for i in 0..50u64 {
        let r = Response {
            kind: K::Allreduce,
            dtype: DataType::F32,
            op: ReduceOp::Sum,
            root: 0,
            prescale: 1.0,
            postscale: 1.0,
            tensors: vec![super::TensorInfo::new(format!("t{}", i % 5), vec![i])],
            error: None,
        };
        if let DownItem::Full {
            cache: Some(ins), ..
        } = cache.decide(r, i)
        {
            assert!(seen.insert(ins.id), "id {} reused", ins.id);
        }
    }
    assert_eq!(cache.counts().0, 2);
}

#[test]
fn join_with_uneven_tensors() {
    let mut sim = SimCluster::new(3, cfg(1024), Mode::InOrder, 1);
    let mut ag = req("g", K::Allgather, &[5, 2]);
    sim.submit(
        0,
        vec![ar("a", &[4]), ar("b", &[4]), ar("c", &[4]), ag.clone()],
    );
    sim.submit(1, vec![ar("a", &[4]), Request::join()]);
    ag.shape = vec![3, 2];
    sim.submit(2, vec![ar("a", &[4]), ar("b", &[4]), ag, Request::join()]);
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1, 2]);
    // c became ready last (when rank 2 joined) but fuses with a and b, ahead of g.
    assert_eq!(names(&plan), ["a", "b", "c", "g"]);
    assert_eq!(plan.len(), 2);
    let g = plan.iter().find(|r| r.kind == K::Allgather).unwrap();
    let err = g
        .error
        .as_ref()
        .expect("allgather with a joined rank is refused");
    assert_eq!((err.field.as_str(), &err.ranks[..]), ("join", &[1][..]));
    assert!(err.message.contains("'g'"), "{}", err.message);
    assert!(
        plan.iter()
            .filter(|r| r.kind != K::Allgather)
            .all(|r| r.error.is_none())
    );
    // Rank 0 joins last: the Join response names it, and join state is cleared.
    sim.submit(0, vec![Request::join()]);
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1, 2]);
    let last = plan.last().unwrap();
    assert_eq!((last.kind, last.root), (K::Join, 0));
    let before = plan.len();
    for r in 0..3 {
        sim.submit(r, vec![ar("after", &[1])]);
    }
    sim.submit(1, vec![ar("only1", &[1])]);
    sim.run_until_idle();
    assert_eq!(
        names(&same_plan(&sim, &[0, 1, 2])[before..]),
        ["after"],
        "nobody is joined any more"
    );
}

#[test]
fn join_errors_for_broadcast_root_and_alltoall() {
    let mut sim = SimCluster::new(2, cfg(1024), Mode::InOrder, 1);
    let mut bc = req("bc", K::Broadcast, &[3]);
    bc.root = 1;
    sim.submit(1, vec![Request::join()]);
    sim.submit(0, vec![bc, req("a2a", K::Alltoall, &[4])]);
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1]);
    let fields: Vec<&str> = plan
        .iter()
        .map(|r| r.error.as_ref().unwrap().field.as_str())
        .collect();
    assert_eq!(fields, ["root", "join"]);
    assert_eq!(plan[0].error.as_ref().unwrap().ranks, [1]);
    assert!(plan[1].error.as_ref().unwrap().message.contains("'a2a'"));
}

#[test]
fn join_refuses_broadcast_from_a_live_root_and_allgather() {
    let mut sim = SimCluster::new(3, cfg(1024), Mode::InOrder, 1);
    sim.submit(2, vec![Request::join()]);
    for r in 0..2 {
        sim.submit(
            r,
            vec![req("bc", K::Broadcast, &[3]), req("ag", K::Allgather, &[2])],
        );
    }
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1, 2]);
    assert_eq!(names(&plan), ["bc", "ag"]);
    for r in &plan {
        let err = r.error.as_ref().expect("refused while rank 2 is joined");
        assert_eq!((err.field.as_str(), &err.ranks[..]), ("join", &[2][..]));
        assert!(err.message.contains("rank 2"), "{}", err.message);
    }
}

#[test]
fn shutdown_reaches_everyone_and_leaves_pending_unanswered() {
    let mut sim = SimCluster::new(3, cfg(1024), Mode::InOrder, 1);
    sim.submit(0, vec![ar("p", &[1])]);
    sim.submit(2, vec![ar("q", &[1])]);
    sim.submit_with(1, vec![], true);
    sim.run_until_idle();
    assert_eq!(sim.shut, [true, true, true]);
    assert!(sim.plans.iter().all(Vec::is_empty));
    sim.submit(1, vec![ar("p", &[1])]);
    sim.submit(2, vec![ar("p", &[1])]);
    sim.run_until_idle();
    assert!(
        sim.plans.iter().all(Vec::is_empty),
        "nothing runs after shutdown"
    );
    assert!(sim.coordinator.is_shut_down() && sim.coordinator.poll_timeout().is_none());
}

#[test]
fn stall_warning_names_tensor_and_missing_ranks_once_per_period() {
    let mut sim = SimCluster::new(4, cfg(1024), Mode::InOrder, 1);
    sim.drop_rank(2);
    for r in [0, 1, 3] {
        sim.submit(r, vec![ar("grad", &[8])]);
    }
    sim.run_until_idle();
    let t0 = sim.clock;
    assert_eq!(
        sim.coordinator.poll_timeout(),
        Some(t0 + Duration::from_secs(60))
    );
    sim.advance(Duration::from_secs(59));
    assert!(sim.warnings.is_empty());
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.warnings.len(), 1);
    let w = &sim.warnings[0];
    assert!(
        w.contains("'grad'") && w.contains("rank 2") && w.contains("61.0s"),
        "{w}"
    );
    sim.advance(Duration::from_secs(30));
    assert_eq!(sim.warnings.len(), 1, "once per period");
    sim.advance(Duration::from_secs(30));
    assert_eq!(sim.warnings.len(), 2);
}

#[test]
fn stall_shutdown_fails_the_tensor_on_every_rank() {
    let config = CoordinatorConfig {
        stall_shutdown: Some(Duration::from_secs(30)),
        ..cfg(1024)
    };
    let mut sim = SimCluster::new(3, config, Mode::InOrder, 1);
    sim.set_delay(1, Duration::from_secs(100));
    sim.submit(0, vec![ar("s", &[1])]);
    sim.submit(2, vec![ar("s", &[1])]);
    sim.submit(1, vec![ar("s", &[1])]);
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1, 2]);
    let e = plan[0].error.as_ref().expect("stalled tensor fails");
    assert_eq!(
        (e.field.as_str(), e.ranks.as_slice()),
        ("stall", &[1u32][..])
    );
    assert!(
        e.message.contains("'s'") && e.message.contains("rank 1"),
        "{}",
        e.message
    );
    assert_eq!(
        sim.coordinator.pending_names(),
        1,
        "rank 1's late request opens a new round"
    );
}

#[test]
fn duplicate_submission_is_deferred_to_the_next_round() {
    let mut sim = SimCluster::new(2, cfg(0), Mode::InOrder, 1);
    sim.submit(0, vec![ar("d", &[1])]);
    sim.submit(0, vec![ar("d", &[2])]);
    sim.submit(1, vec![ar("d", &[1])]);
    sim.submit(1, vec![ar("d", &[2])]);
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1]);
    let shapes: Vec<&[u64]> = plan.iter().map(|r| r.tensors[0].shape.as_slice()).collect();
    assert_eq!(shapes, [&[1u64][..], &[2]]);
}

#[test]
fn bad_input_from_ranks_is_reported_not_fatal() {
    let mut coord = Coordinator::new(2, cfg(16));
    let t = Instant::now();
    coord.handle_message(t, 7, super::UpMsg::default());
    let bogus = super::UpMsg {
        epoch: 99,
        items: vec![UpItem::Cached(12345)],
        shutdown: false,
    };
    coord.handle_message(t, 1, bogus);
    let warnings: Vec<String> = std::iter::from_fn(|| coord.poll_warning()).collect();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].contains("rank 7"));
    assert!(warnings[2].contains("12345"));
    assert!(coord.poll_transmit().is_none());
}

#[test]
fn rank_lists_collapse_runs() {
    assert_eq!(rank_list(&[3]), "rank 3");
    assert_eq!(rank_list(&[0, 1, 2, 5, 7, 8]), "ranks 0-2, 5, 7, 8");
}

#[test]
fn thousand_ranks_few_steps() {
    let start = std::time::Instant::now();
    let size = 1000;
    let mut sim = SimCluster::new(size, cfg(1024), Mode::InOrder, 7);
    let batch: Vec<Request> = (0..8).map(|i| ar(&format!("t{i}"), &[256])).collect();
    for _ in 0..3 {
        for r in (0..size).rev() {
            sim.submit(r, batch.clone());
        }
        sim.run_until_idle();
    }
    let all: Vec<usize> = (0..size).collect();
    let plan = same_plan(&sim, &all);
    assert_eq!(plan.len(), 3);
    assert!(
        plan.iter()
            .all(|r| r.tensors.len() == 8 && r.error.is_none())
    );
    assert_eq!(sim.stats.cached_items, 2 * 8 * size);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "1000 ranks took {took:?}");
}
