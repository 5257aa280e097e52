//! Groups: negotiated as one unit, fused together (or kept apart from other tensors with group
//! fusion disabled), mismatches failed on every rank, and the response cache unaffected.

use std::time::Duration;

use super::sim::{Mode, SimCluster};
use super::{ar, cfg, names, req, same_plan};
use crate::coordinator::{CoordinatorConfig, GroupTag, Request, Response};
use crate::types::CollectiveKind as K;

/// `reqs` tagged as one group with this rank-local `id`.
fn group(id: u64, reqs: Vec<Request>) -> Vec<Request> {
    let size = reqs.len() as u32;
    reqs.into_iter()
        .map(|mut q| {
            q.group = Some(GroupTag { id, size });
            q
        })
        .collect()
}

/// Allreduces of `[n]` f32 named `prefix.0 ..`.
fn tensors(prefix: &str, count: usize, n: u64) -> Vec<Request> {
    (0..count)
        .map(|i| ar(&format!("{prefix}.{i}"), &[n]))
        .collect()
}

/// Names per response, for asserting how a plan was fused.
fn shape_of(plan: &[Response]) -> Vec<Vec<String>> {
    plan.iter()
        .map(|r| r.tensors.iter().map(|t| t.name.clone()).collect())
        .collect()
}

/// Every response is an error with `field`; returns the names, sorted.
fn failed(plan: &[Response], field: &str) -> Vec<String> {
    let mut out: Vec<String> = plan
        .iter()
        .map(|r| {
            let e = r
                .error
                .as_ref()
                .unwrap_or_else(|| panic!("{r:?} succeeded"));
            assert_eq!(e.field, field, "{}", e.message);
            r.tensors[0].name.clone()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn group_is_answered_whole_in_one_message_and_fused() {
    let mut sim = SimCluster::new(2, cfg(1024), Mode::InOrder, 1);
    sim.submit(0, group(0, tensors("g", 3, 4)));
    sim.submit(1, vec![ar("x", &[2])]);
    sim.run_until_idle();
    assert!(sim.plans[0].is_empty(), "rank 1 has not sent the group yet");
    sim.submit(1, group(7, tensors("g", 3, 4)));
    sim.submit(0, vec![ar("x", &[2])]);
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1]);
    assert_eq!(
        shape_of(&plan),
        [vec!["g.0", "g.1", "g.2"], vec!["x"]],
        "the group is one fused response"
    );
    assert_eq!(sim.coordinator.pending_names(), 0);
}

#[test]
fn group_over_the_threshold_splits_at_the_threshold_in_one_message() {
    let config = CoordinatorConfig {
        fusion_threshold: 64,
        ..cfg(0)
    };
    let mut sim = SimCluster::new(2, config, Mode::InOrder, 1);
    for r in 0..2 {
        sim.submit(r, group(0, tensors("g", 5, 8)));
    }
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1]);
    assert_eq!(
        shape_of(&plan),
        [vec!["g.0", "g.1"], vec!["g.2", "g.3"], vec!["g.4"]],
        "32-byte tensors, 64-byte threshold"
    );
    let seqs = &sim.seqs[0];
    assert!(seqs.iter().all(|&s| s == seqs[0]), "one DownMsg: {seqs:?}");
}

/// Rank 0 submits everything first; rank 1's single message makes it all ready together.
fn mixed_plan(disable_group_fusion: bool) -> Vec<Response> {
    let config = CoordinatorConfig {
        disable_group_fusion,
        ..cfg(1024)
    };
    let mut sim = SimCluster::new(2, config, Mode::InOrder, 1);
    for r in 0..2 {
        let mut batch = vec![ar("u", &[4])];
        batch.extend(group(0, tensors("a", 2, 4)));
        batch.push(ar("v", &[4]));
        batch.extend(group(1, tensors("c", 2, 4)));
        sim.submit(r, batch);
    }
    sim.run_until_idle();
    same_plan(&sim, &[0, 1])
}

#[test]
fn group_fusion_on_fuses_groups_with_everything_ready() {
    assert_eq!(
        shape_of(&mixed_plan(false)),
        [vec!["u", "a.0", "a.1", "v", "c.0", "c.1"]]
    );
}

#[test]
fn disable_group_fusion_fuses_a_group_only_with_itself() {
    assert_eq!(
        shape_of(&mixed_plan(true)),
        [vec!["u", "v"], vec!["a.0", "a.1"], vec!["c.0", "c.1"]],
        "as HOROVOD_DISABLE_GROUP_FUSION=1 in Horovod"
    );
}

#[test]
fn ranks_grouping_different_names_fail_every_name_on_every_rank() {
    let mut sim = SimCluster::new(3, cfg(1024), Mode::InOrder, 1);
    sim.submit(0, group(0, vec![ar("a", &[1]), ar("b", &[1])]));
    sim.submit(1, group(0, vec![ar("a", &[1]), ar("b", &[1])]));
    sim.submit(2, group(0, vec![ar("a", &[1]), ar("c", &[1])]));
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1, 2]);
    assert_eq!(failed(&plan, "group"), ["a", "b", "c"]);
    let a = plan.iter().find(|r| r.tensors[0].name == "a").unwrap();
    let e = a.error.as_ref().unwrap();
    assert_eq!(
        e.message,
        "tensor 'a': the ranks grouped it differently: ranks 0, 1 grouped 2 tensors [a, b], \
         rank 2 grouped 2 tensors [a, c]"
    );
    assert_eq!(e.ranks, [2]);
    assert_eq!(
        sim.coordinator.pending_names(),
        0,
        "nothing is left to hang"
    );
}

#[test]
fn group_sizes_that_differ_fail_the_group() {
    let mut sim = SimCluster::new(2, cfg(1024), Mode::InOrder, 1);
    sim.submit(0, group(0, tensors("g", 3, 1)));
    sim.submit(1, group(0, tensors("g", 2, 1)));
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1]);
    assert_eq!(failed(&plan, "group"), ["g.0", "g.1", "g.2"]);
    let msg = &plan[0].error.as_ref().unwrap().message;
    assert!(
        msg.contains("rank 0 grouped 3 tensors") && msg.contains("rank 1 grouped 2 tensors"),
        "{msg}"
    );
    assert_eq!(sim.coordinator.pending_names(), 0);
}

#[test]
fn a_group_against_plain_submissions_fails_on_every_rank() {
    let mut sim = SimCluster::new(2, cfg(1024), Mode::InOrder, 1);
    sim.submit(0, group(0, vec![ar("a", &[1]), ar("b", &[1])]));
    sim.submit(1, vec![ar("a", &[1]), ar("b", &[1])]);
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1]);
    assert_eq!(failed(&plan, "group"), ["a", "b"]);
    assert_eq!(sim.coordinator.pending_names(), 0);
}

#[test]
fn a_group_of_one_agrees_with_a_plain_submission() {
    let mut sim = SimCluster::new(2, cfg(1024), Mode::InOrder, 1);
    sim.submit(0, group(0, vec![ar("a", &[1])]));
    sim.submit(1, vec![ar("a", &[1])]);
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1]);
    assert_eq!(names(&plan), ["a"]);
    assert!(plan[0].error.is_none());
}

#[test]
fn a_field_mismatch_inside_a_group_fails_that_tensor_alone() {
    let mut sim = SimCluster::new(2, cfg(1024), Mode::InOrder, 1);
    sim.submit(0, group(0, vec![ar("a", &[1]), ar("b", &[2])]));
    sim.submit(1, group(0, vec![ar("a", &[1]), ar("b", &[3])]));
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1]);
    assert_eq!(names(&plan), ["a", "b"]);
    assert!(plan[0].error.is_none());
    assert_eq!(plan[1].error.as_ref().unwrap().field, "shape");
}

#[test]
fn cached_groups_keep_their_ids_and_their_plan() {
    let mut sim = SimCluster::new(3, cfg(1024), Mode::Shuffled, 9);
    let mut rounds = Vec::new();
    for round in 0..4 {
        let before = sim.plans[0].len();
        let cached_before = sim.stats.cached_items;
        for r in [2, 0, 1] {
            let mut batch = group(round, tensors("g", 4, 2));
            batch.push(req("p", K::Allgather, &[1 + r as u64]));
            sim.submit(r, batch);
        }
        sim.run_until_idle();
        let plan = same_plan(&sim, &[0, 1, 2]);
        rounds.push(plan[before..].to_vec());
        let hits = sim.stats.cached_items - cached_before;
        assert_eq!(
            hits,
            if round == 0 { 0 } else { 15 },
            "round {round}: every member travels as its cache id"
        );
    }
    assert!(rounds.windows(2).all(|w| w[0] == w[1]), "{rounds:?}");
    assert!(
        shape_of(&rounds[0]).contains(&vec![
            "g.0".to_string(),
            "g.1".into(),
            "g.2".into(),
            "g.3".into()
        ]),
        "{rounds:?}"
    );
    assert_eq!(sim.coordinator.cache_stats().0, 5);
}

#[test]
fn a_joined_rank_does_not_hold_a_group_back() {
    let mut sim = SimCluster::new(3, cfg(1024), Mode::InOrder, 1);
    sim.submit(2, vec![Request::join()]);
    sim.submit(0, group(0, tensors("g", 2, 4)));
    sim.submit(1, group(3, tensors("g", 2, 4)));
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1, 2]);
    assert_eq!(shape_of(&plan), [vec!["g.0", "g.1"]]);
}

#[test]
fn stall_shutdown_fails_a_group_together() {
    let config = CoordinatorConfig {
        stall_shutdown: Some(Duration::from_secs(30)),
        ..cfg(1024)
    };
    let mut sim = SimCluster::new(3, config, Mode::InOrder, 1);
    sim.submit(0, group(0, tensors("g", 3, 1)));
    sim.submit(1, group(0, tensors("g", 3, 1)));
    sim.run_until_idle();
    sim.advance(Duration::from_secs(31));
    sim.run_until_idle();
    let plan = same_plan(&sim, &[0, 1, 2]);
    assert_eq!(failed(&plan, "stall"), ["g.0", "g.1", "g.2"]);
    assert!(plan.iter().all(|r| r.error.as_ref().unwrap().ranks == [2]));
    assert_eq!(sim.coordinator.pending_names(), 0);
}

/// Property-style: random unit orders per rank, shuffled delivery, cache on and off. Every rank
/// gets the same plan, nothing fails, and each group lands in one message with its members
/// fused together.
#[test]
fn shuffled_rounds_of_groups_and_plain_tensors_agree() {
    for seed in 0..40u64 {
        let size = 2 + (seed % 3) as usize;
        let cache = if seed % 2 == 0 { 1024 } else { 0 };
        let mut sim = SimCluster::new(size, cfg(cache), Mode::Shuffled, seed);
        let mut rng = super::sim::Rng::new(seed ^ 0x9e37);
        let scripts: Vec<Vec<Vec<Request>>> = (0..size)
            .map(|_| {
                let mut gid = 0;
                (0..5)
                    .map(|_| {
                        let mut units: Vec<Vec<Request>> = vec![
                            tensors("a", 3, 2),
                            tensors("b", 2, 5),
                            vec![ar("p", &[3])],
                            vec![ar("q", &[1])],
                        ];
                        // Fisher-Yates on the units; a group's members stay together.
                        for i in (1..units.len()).rev() {
                            units.swap(i, rng.below(i + 1));
                        }
                        units
                            .into_iter()
                            .flat_map(|u| {
                                if u.len() > 1 {
                                    gid += 1;
                                    group(gid, u)
                                } else {
                                    u
                                }
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        sim.run_scripts(scripts);
        let ranks: Vec<usize> = (0..size).collect();
        let plan = same_plan(&sim, &ranks);
        assert!(plan.iter().all(|r| r.error.is_none()), "seed {seed}");
        assert_eq!(names(&plan).len(), 5 * 7, "seed {seed}");
        for resp in &plan {
            let prefix = |n: &str| n.split('.').next().unwrap_or("").to_owned();
            let first = prefix(&resp.tensors[0].name);
            if first == "a" || first == "b" {
                let want = if first == "a" { 3 } else { 2 };
                let members = resp
                    .tensors
                    .iter()
                    .filter(|t| prefix(&t.name) == first)
                    .count();
                assert_eq!(
                    members, want,
                    "seed {seed}: group {first} fused whole: {resp:?}"
                );
            }
        }
    }
}
