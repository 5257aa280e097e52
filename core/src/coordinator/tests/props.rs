//! Property tests: random workloads and arrival orders through the simulated cluster.

use std::collections::HashMap;

use proptest::prelude::*;

use super::super::{CoordinatorConfig, Request, Response, TensorInfo};
use super::super::{cache, fusion, negotiate};
use super::sim::{Mode, Rng, SimCluster};
use super::{cfg, names, same_plan};
use crate::types::{CollectiveKind as K, DataType, ReduceOp};

/// One tensor of one iteration, before it is specialised per rank.
#[derive(Debug, Clone)]
struct Spec {
    name: usize,
    kind: K,
    dtype: DataType,
    shape: Vec<u64>,
    op: ReduceOp,
    root: u32,
    explicit_splits: bool,
}

fn kind_strategy() -> impl Strategy<Value = K> {
    prop_oneof![
        4 => Just(K::Allreduce),
        1 => Just(K::Allgather),
        1 => Just(K::Broadcast),
        1 => Just(K::Alltoall),
        1 => Just(K::Reducescatter),
        1 => Just(K::Barrier),
    ]
}

fn spec_strategy(names: usize) -> impl Strategy<Value = Spec> {
    (
        0..names,
        kind_strategy(),
        prop::sample::select(DataType::ALL.to_vec()),
        prop::collection::vec(1u64..6, 1..3),
        prop::sample::select(ReduceOp::ALL.to_vec()),
        0u32..8,
        any::<bool>(),
    )
        .prop_map(
            |(name, kind, dtype, shape, op, root, explicit_splits)| Spec {
                name,
                kind,
                dtype,
                shape,
                op,
                root,
                explicit_splits,
            },
        )
}

/// Rank `rank`'s request for `s`: allgather dim 0 and alltoall splits differ between ranks.
fn request(s: &Spec, rank: usize, size: usize) -> Request {
    let mut q = Request::new(format!("t{}", s.name), s.kind, s.dtype, s.shape.clone());
    q.op = s.op;
    q.root = s.root % size as u32;
    match s.kind {
        K::Allgather => q.shape[0] += rank as u64 % 3,
        K::Alltoall => {
            q.shape[0] *= size as u64;
            if s.explicit_splits {
                // Uneven but valid: rank r sends its surplus rows to rank (r + 1) % size.
                let even = q.shape[0] / size as u64;
                q.splits = vec![even; size];
                q.shape[0] += 1;
                q.splits[(rank + 1) % size] += 1;
            }
        }
        _ => {}
    }
    q
}

/// A workload: one spec per name, then iterations that each run some of the names (each at
/// most once), mostly unchanged so the cache hits, sometimes with a changed shape that sticks.
fn workload_strategy() -> impl Strategy<Value = (usize, Vec<Vec<Spec>>, bool, u64)> {
    (1usize..6, 1usize..10).prop_flat_map(|(size, names)| {
        let base = prop::collection::vec(spec_strategy(names), names..=names);
        let iteration = prop::collection::vec((0..names, 0u8..8), 0..10);
        (
            base,
            prop::collection::vec(iteration, 1..6),
            any::<bool>(),
            any::<u64>(),
        )
            .prop_map(move |(mut base, picks, join, seed)| {
                for (i, s) in base.iter_mut().enumerate() {
                    s.name = i;
                }
                let iters = picks
                    .into_iter()
                    .map(|pick| {
                        let mut seen = std::collections::HashSet::new();
                        let mut it = Vec::new();
                        for (n, change) in pick {
                            if !seen.insert(n) {
                                continue;
                            }
                            if change == 0 {
                                let last = base[n].shape.len() - 1;
                                base[n].shape[last] += 1;
                            }
                            it.push(base[n].clone());
                        }
                        it
                    })
                    .collect();
                (size, iters, join, seed)
            })
    })
}

/// Per-rank scripts: each rank submits every iteration's tensors in its own order, in batches.
fn scripts(size: usize, iters: &[Vec<Spec>], join: bool, seed: u64) -> Vec<Vec<Vec<Request>>> {
    (0..size)
        .map(|rank| {
            let mut rng = Rng::new(seed ^ ((rank as u64 + 1) * 0x1234_5678));
            let mut out = Vec::new();
            for it in iters {
                let mut reqs: Vec<Request> = it.iter().map(|s| request(s, rank, size)).collect();
                for i in (1..reqs.len()).rev() {
                    reqs.swap(i, rng.below(i + 1));
                }
                while !reqs.is_empty() {
                    let n = 1 + rng.below(3.min(reqs.len()));
                    out.push(reqs.drain(..n).collect());
                }
            }
            if join {
                out.push(vec![Request::join()]);
            }
            out
        })
        .collect()
}

fn run(
    size: usize,
    script: Vec<Vec<Vec<Request>>>,
    config: CoordinatorConfig,
    seed: u64,
) -> SimCluster {
    let mut sim = SimCluster::new(size, config, Mode::Shuffled, seed);
    // Uneven network delays (the same in every run of one seed) move the fake clock too.
    for r in 0..size {
        sim.set_delay(r, std::time::Duration::from_millis((seed >> (r * 3)) % 7));
    }
    sim.run_scripts(script);
    sim
}

/// Every submitted tensor is answered exactly once, without error, on every rank.
fn check_answers(sim: &SimCluster, iters: &[Vec<Spec>], join: bool) -> Vec<Response> {
    let all: Vec<usize> = (0..sim.size()).collect();
    let plan = same_plan(sim, &all);
    let mut expected: HashMap<String, usize> = HashMap::new();
    for s in iters.iter().flatten() {
        *expected.entry(format!("t{}", s.name)).or_default() += 1;
    }
    let mut got: HashMap<String, usize> = HashMap::new();
    for r in &plan {
        assert!(r.error.is_none(), "unexpected error {:?}", r.error);
        if r.kind != K::Join {
            for t in &r.tensors {
                *got.entry(t.name.clone()).or_default() += 1;
            }
        }
    }
    assert_eq!(got, expected);
    let joins = plan.iter().filter(|r| r.kind == K::Join).count();
    assert_eq!(joins, usize::from(join));
    if join {
        assert_eq!(plan.last().map(|r| r.kind), Some(K::Join));
    }
    assert_eq!(sim.coordinator.pending_names(), 0);
    plan
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Random tensors, random arrival orders, stale caches: every rank gets the same plan,
    /// every tensor once, and the cache (any capacity, including tiny ones that evict all the
    /// time) gives exactly the plan of full negotiation.
    #[test]
    fn cache_and_full_negotiation_agree((size, iters, join, seed) in workload_strategy(),
                                        cap in prop::sample::select(vec![1usize, 2, 3, 1024]),
                                        threshold in prop::sample::select(vec![0usize, 40, 1 << 20])) {
        let config = |c| CoordinatorConfig { fusion_threshold: threshold, ..cfg(c) };
        let full = run(size, scripts(size, &iters, join, seed), config(0), seed);
        let cached = run(size, scripts(size, &iters, join, seed), config(cap), seed);
        let plan = check_answers(&full, &iters, join);
        check_answers(&cached, &iters, join);
        prop_assert_eq!(&plan, &cached.plans[0]);
        prop_assert_eq!(full.stats.cached_items, 0);
        for r in &plan {
            prop_assert!(r.tensors.len() == 1 || r.bytes() <= threshold as u64);
        }
        prop_assert_eq!(cached.stats.cached_items + cached.stats.full_items, full.stats.full_items);
    }

    /// The cache fast path is exact: every rank's own request for a negotiated tensor hits its
    /// entry, the coordinator's rebuilt requests negotiate to the very same response, and a
    /// request that differs in any field misses.
    #[test]
    fn cache_match_is_exact((size, iters, _join, _seed) in workload_strategy(), field in 0usize..8) {
        for spec in iters.iter().flatten() {
            let reqs: Vec<Request> = (0..size).map(|r| request(spec, r, size)).collect();
            let name = reqs[0].name.clone();
            let slots: Vec<Option<Request>> = reqs.iter().cloned().map(Some).collect();
            let joined = vec![false; size];
            let resp = negotiate::negotiate(&name, &slots, &joined);
            prop_assert!(resp.error.is_none(), "{:?}", resp.error);
            let rebuilt: Vec<Option<Request>> =
                (0..size).map(|r| Some(cache::request_for(&resp, r))).collect();
            prop_assert_eq!(&negotiate::negotiate(&name, &rebuilt, &joined), &resp);
            for (r, own) in reqs.iter().enumerate() {
                prop_assert!(cache::matches(&resp, r, own), "rank {} misses {:?}", r, own);
                let mut bad = own.clone();
                match field {
                    0 => bad.name.push('x'),
                    1 => bad.dtype = if bad.dtype == DataType::F32 { DataType::F64 } else { DataType::F32 },
                    2 => *bad.shape.last_mut().unwrap() += 1,
                    3 => bad.op = if bad.op == ReduceOp::Sum { ReduceOp::Max } else { ReduceOp::Sum },
                    4 => bad.root += 1,
                    5 => bad.prescale = -bad.prescale,
                    6 => bad.splits = vec![bad.shape[0] + 1],
                    _ => bad.kind = if bad.kind == K::Allreduce { K::Broadcast } else { K::Allreduce },
                }
                prop_assert!(!cache::matches(&resp, r, &bad), "field {} change still hits", field);
            }
        }
    }

    /// Each kind of mismatch produces one error naming the tensor, the field and the ranks, on
    /// every rank — also when the agreeing ranks send cache ids.
    #[test]
    fn mismatch_yields_one_named_error(size in 2usize..7, bad in 0usize..7, warm in any::<bool>(),
                                       field in prop::sample::select(vec!["dtype", "shape", "op", "root", "kind", "splits", "prescale"])) {
        let bad = bad % size;
        let make = |faulty: bool| {
            let kind = match field {
                "root" => K::Broadcast,
                "splits" => K::Alltoall,
                _ => K::Allreduce,
            };
            let mut q = Request::new("w", kind, DataType::F32, vec![2 * size as u64, 3]);
            if faulty {
                match field {
                    "dtype" => q.dtype = DataType::F64,
                    "shape" => q.shape[1] = 4,
                    "op" => q.op = ReduceOp::Max,
                    "root" => q.root = 1,
                    "kind" => q.kind = K::Allgather,
                    "splits" => q.splits = vec![1; size],
                    _ => q.prescale = 0.5,
                }
            }
            q
        };
        let mut sim = SimCluster::new(size, cfg(1024), Mode::Shuffled, bad as u64);
        if warm {
            for r in 0..size {
                sim.submit(r, vec![make(false)]);
            }
            sim.run_until_idle();
        }
        for r in 0..size {
            sim.submit(r, vec![make(r == bad)]);
        }
        sim.run_until_idle();
        let all: Vec<usize> = (0..size).collect();
        let plan = same_plan(&sim, &all);
        prop_assert_eq!(plan.len(), 1 + usize::from(warm));
        prop_assert!(plan[0].error.is_none() || !warm);
        let e = plan.last().unwrap().error.clone().expect("mismatch must fail");
        prop_assert_eq!(e.field.as_str(), field);
        prop_assert!(e.message.contains("tensor 'w'") && e.message.contains(field), "{}", e.message);
        prop_assert!(e.message.contains(&format!("{bad}")), "{}", e.message);
        let expected: Vec<u32> = if bad == 0 && field != "splits" {
            (1..size as u32).collect()
        } else {
            vec![bad as u32]
        };
        prop_assert_eq!(e.ranks, expected);
        if warm {
            prop_assert!(sim.stats.cached_items >= size - 1, "agreeing ranks used the cache");
        }
    }

    /// Fusion never exceeds the threshold, only merges matching allreduces, never moves
    /// anything across a barrier, and keeps every name's rounds in order.
    #[test]
    fn fusion_plan_is_sound(items in prop::collection::vec((0usize..5, kind_strategy(),
                                prop::sample::select(vec![DataType::F32, DataType::F16]), 0u64..40), 0..40),
                            threshold in 0u64..200) {
        // Name 4 is an Adasum allreduce, which is never fused.
        let ready: Vec<Response> = items.iter().map(|&(name, kind, dtype, n)| Response {
            kind, dtype, op: if name == 4 { ReduceOp::Adasum } else { ReduceOp::Sum },
            root: 0, prescale: 1.0, postscale: 1.0,
            tensors: vec![TensorInfo::new(format!("n{name}"), vec![n])], error: None,
        }).collect();
        let groups = fusion::plan(&ready, None, threshold);
        let mut pos = vec![usize::MAX; ready.len()];
        for (g, group) in groups.iter().enumerate() {
            for &i in group {
                prop_assert_eq!(pos[i], usize::MAX, "index {} placed twice", i);
                pos[i] = g;
            }
            let parts: Vec<Response> = group.iter().map(|&i| ready[i].clone()).collect();
            prop_assert!(fusion::fusable(&parts));
            if group.len() > 1 {
                prop_assert!(group.iter().all(|&i| ready[i].op != ReduceOp::Adasum), "Adasum fused");
                prop_assert!(fusion::merge(parts).bytes() <= threshold);
            }
        }
        prop_assert!(pos.iter().all(|&p| p != usize::MAX));
        for i in 0..ready.len() {
            for j in i + 1..ready.len() {
                let same = ready[i].tensors[0].name == ready[j].tensors[0].name;
                let fence = matches!(ready[i].kind, K::Barrier) || matches!(ready[j].kind, K::Barrier);
                if same || fence {
                    prop_assert!(pos[i] < pos[j], "{} and {} out of order", i, j);
                }
            }
        }
    }
}

/// More names than the cache holds: constant eviction, still the same plans as no cache.
#[test]
fn more_names_than_capacity() {
    let size = 2;
    let iters: Vec<Vec<Spec>> = (0..3)
        .map(|it| {
            (0..1100)
                .map(|n| Spec {
                    name: n,
                    kind: K::Allreduce,
                    dtype: DataType::F32,
                    shape: vec![1 + (n as u64 + it) % 4 / 3],
                    op: ReduceOp::Sum,
                    root: 0,
                    explicit_splits: false,
                })
                .collect()
        })
        .collect();
    let full = run(size, scripts(size, &iters, false, 5), cfg(0), 5);
    let cached = run(size, scripts(size, &iters, false, 5), cfg(1024), 5);
    let plan = check_answers(&full, &iters, false);
    check_answers(&cached, &iters, false);
    assert_eq!(plan, cached.plans[0]);
    assert!(
        cached.stats.cached_items > 0,
        "some entries survive between iterations"
    );
    let (live, _) = cached.coordinator.cache_stats();
    assert_eq!(live, 1024);
    assert_eq!(names(&plan).len(), 3300);
}
