//! Hierarchical collectives with ranks on threads, "hosts" being groups of them: the host's
//! collectives are rings over a [`SubTransport`] of the in-process transport (or real shared
//! memory), checked bitwise against sequential references and the flat ring.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::half::{bf16, f16};
use hora_shm::{ShmConfig, ShmGroup};
use hora_transport::conformance::run_ranks;
use hora_transport::{CollectiveError, LocalTransport, Transport, TransportError, deadline_after};

use super::*;
use crate::collectives::conformance::mix;
use crate::collectives::{Dispatch, Ring, SubTransport};
use crate::config::{Topology, Tuning};
use crate::engine::{Engine, OpOptions};
use crate::reduce::reduce_into;

const OPS: [ReduceOp; 5] = [
    ReduceOp::Sum,
    ReduceOp::Min,
    ReduceOp::Max,
    ReduceOp::Product,
    ReduceOp::Average,
];

fn deadline() -> Instant {
    deadline_after(Duration::from_secs(60))
}

/// Host-major numbering (horovodrun's) or round-robin (rank = l × hosts + h, as
/// `mpirun --map-by node` numbers ranks).
fn layout(hosts: usize, local: usize, round_robin: bool) -> Layout {
    if !round_robin {
        return Layout::uniform(hosts, local);
    }
    let places: Vec<Place> = (0..hosts * local)
        .map(|r| Place {
            local_rank: (r / hosts) as u32,
            local_size: local as u32,
            cross_rank: (r % hosts) as u32,
            cross_size: hosts as u32,
        })
        .collect();
    Layout::from_places(&places).unwrap()
}

/// Hierarchical collectives for rank `t` of `layout`: rings over sub-views of the in-process
/// transport with `seg`-byte segments (tiny ones reach the pipelined paths).
/// Hierarchical collectives behind the dispatch wrapper, as the engine runs them (the
/// wrapper's ring runs what the hierarchy does not).
type Hier = Dispatch<Hierarchical>;

fn build(layout: &Layout, t: &LocalTransport, seg: usize, mode: HierarchicalMode) -> Hier {
    build_with(layout, t, seg, |h| h.with_mode(mode))
}

/// Like [`build`], with `adjust` applied to the hierarchy first.
fn build_with(
    layout: &Layout,
    t: &LocalTransport,
    seg: usize,
    adjust: impl FnOnce(Hierarchical) -> Hierarchical,
) -> Hier {
    let job: Arc<dyn Transport> = Arc::new(t.clone());
    let (h, l) = layout.place_of(t.rank());
    let ring = |members: Vec<usize>| {
        let sub: Arc<dyn Transport> = Arc::new(SubTransport::new(job.clone(), members).unwrap());
        Box::new(Ring::new(sub).with_segment_bytes(seg)) as Box<dyn Collectives>
    };
    let hier = Hierarchical::new(
        layout.clone(),
        t.rank(),
        ring(layout.host_ranks(h)),
        ring(layout.cross_ranks(l)),
    );
    Dispatch::new(
        Box::new(adjust(hier)),
        Ring::new(job.clone()).with_segment_bytes(seg),
    )
}

/// Runs `f` on every rank of a `layout` job.
fn on_cluster<R: Send>(
    layout: &Layout,
    seg: usize,
    mode: HierarchicalMode,
    f: impl Fn(&Hier) -> R + Sync,
) -> Vec<R> {
    on_cluster_piped(layout, seg, mode, 0, f)
}

/// Like [`on_cluster`], pipelining split allreduces in pieces of `pipeline` bytes.
fn on_cluster_piped<R: Send>(
    layout: &Layout,
    seg: usize,
    mode: HierarchicalMode,
    pipeline: usize,
    f: impl Fn(&Hier) -> R + Sync,
) -> Vec<R> {
    run_ranks(LocalTransport::create(layout.size()), |_, t| {
        f(&build_with(layout, t, seg, |h| {
            h.with_mode(mode).with_pipeline_bytes(pipeline)
        }))
    })
}

fn encode(dtype: DataType, v: i64) -> Vec<u8> {
    match dtype {
        DataType::U8 => vec![v as u8],
        DataType::I8 => (v as i8).to_le_bytes().to_vec(),
        DataType::I16 => (v as i16).to_le_bytes().to_vec(),
        DataType::U16 => (v as u16).to_le_bytes().to_vec(),
        DataType::Bool => vec![u8::from(v != 0)],
        DataType::I32 => (v as i32).to_le_bytes().to_vec(),
        DataType::I64 => v.to_le_bytes().to_vec(),
        DataType::F32 => (v as f32).to_le_bytes().to_vec(),
        DataType::F64 => (v as f64).to_le_bytes().to_vec(),
        DataType::F16 => f16::from_f32(v as f32).to_le_bytes().to_vec(),
        DataType::Bf16 => bf16::from_f32(v as f32).to_le_bytes().to_vec(),
    }
}

/// Inputs whose every reduction is exact in every dtype for up to 9 ranks (sums of 0..4,
/// products of ±1 and 2 up to 2^9 — within u8 only for 1 and 2 over few ranks, so products
/// use 1 and 2 only where they cannot overflow), so results can be compared bitwise with a
/// sequential fold whatever order the algorithm reduces in.
fn input(dtype: DataType, op: ReduceOp, rank: usize, elems: usize, salt: usize) -> Vec<u8> {
    (0..elems)
        .flat_map(|i| {
            let r = mix(rank, i, salt);
            let v = match op {
                ReduceOp::Sum | ReduceOp::Average | ReduceOp::Adasum => (r % 5) as i64,
                ReduceOp::Product if matches!(dtype, DataType::U8 | DataType::I8) => {
                    [1, 1, 1, 2][(r % 4) as usize]
                }
                ReduceOp::Product => [1, 2, -1][(r % 3) as usize],
                ReduceOp::Min | ReduceOp::Max if matches!(dtype, DataType::U8 | DataType::U16) => {
                    (r % 100) as i64
                }
                ReduceOp::Min | ReduceOp::Max => (r % 100) as i64 - 50,
            };
            encode(dtype, v)
        })
        .collect()
}

fn reference(dtype: DataType, op: ReduceOp, np: usize, elems: usize, salt: usize) -> Vec<u8> {
    let mut acc = input(dtype, op, 0, elems, salt);
    for r in 1..np {
        reduce_into(&mut acc, &input(dtype, op, r, elems, salt), dtype, op).unwrap();
    }
    acc
}

/// One allreduce per size × dtype × op, in that order, each under its own sequence number;
/// returns the results in the same order.
fn allreduce_every_case(h: &Hier, sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (salt, &elems) in sizes.iter().enumerate() {
        for (i, dtype) in DataType::ALL.into_iter().enumerate() {
            for (j, op) in OPS.into_iter().enumerate() {
                let mut buf = input(dtype, op, h.rank(), elems, salt);
                let seq = ((salt * DataType::ALL.len() + i) * OPS.len() + j) as u64;
                h.allreduce(&mut buf, dtype, op, seq, deadline()).unwrap();
                out.push(buf);
            }
        }
    }
    out
}

/// Asserts that each rank's [`allreduce_every_case`] results equal the sequential reference
/// over `np` ranks; `what` names the layout in a failure.
fn assert_every_case(per_rank: &[&Vec<Vec<u8>>], np: usize, sizes: &[usize], what: &str) {
    let mut k = 0;
    for (salt, &elems) in sizes.iter().enumerate() {
        for dtype in DataType::ALL {
            for op in OPS {
                // Computed once per case, not once per rank: the reference is the slow part.
                let want = reference(dtype, op, np, elems, salt);
                for (rank, res) in per_rank.iter().enumerate() {
                    assert!(res[k] == want, "{what} {elems} {dtype} {op} rank {rank}");
                }
                k += 1;
            }
        }
    }
}

#[test]
fn allreduce_matches_the_sequential_reference_for_every_dtype_op_layout_and_size() {
    for (hosts, local) in [(2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (3, 3)] {
        for round_robin in [false, true] {
            let lay = layout(hosts, local, round_robin);
            let np = lay.size();
            for mode in [HierarchicalMode::Split, HierarchicalMode::Leader] {
                // Sizes below, at and around the number of local ranks, ragged and larger
                // than the recursive-doubling threshold of the cross ring.
                let sizes = [0usize, 1, local + 1, 13, 997, 20_011];
                let results = on_cluster(&lay, 4096, mode, |h| allreduce_every_case(h, &sizes));
                let what = format!("{hosts}x{local} rr={round_robin} {mode:?}");
                assert_every_case(&results.iter().collect::<Vec<_>>(), np, &sizes, &what);
            }
        }
    }
}

#[test]
fn pipelined_allreduce_matches_the_reference_for_every_dtype_and_op() {
    for (hosts, local) in [(2, 2), (3, 2), (2, 3)] {
        let lay = layout(hosts, local, hosts == 3);
        let np = lay.size();
        // Pieces of 3000 bytes (rounded down to whole elements): from 2 pieces to ~270, the
        // last one short.
        let sizes = [1500usize, 20_011, 100_003];
        let results = on_cluster_piped(&lay, 4096, HierarchicalMode::Split, 3000, |h| {
            allreduce_every_case(h, &sizes)
        });
        let what = format!("{hosts}x{local}");
        assert_every_case(&results.iter().collect::<Vec<_>>(), np, &sizes, &what);
    }
}

#[test]
fn inexact_float_sums_are_bit_identical_on_every_rank_and_close_to_the_flat_ring() {
    let lay = Layout::uniform(3, 2);
    let elems = 50_001;
    let data = |rank: usize| -> Vec<f32> {
        (0..elems)
            .map(|i| (mix(rank, i, 7) % 1_000_003) as f32 / 997.0 - 500.0)
            .collect()
    };
    for mode in [HierarchicalMode::Split, HierarchicalMode::Leader] {
        let results = on_cluster(&lay, 8192, mode, |h| {
            let mut hier: Vec<f32> = data(h.rank());
            h.allreduce(
                bytemuck::cast_slice_mut(&mut hier),
                DataType::F32,
                ReduceOp::Sum,
                1,
                deadline(),
            )
            .unwrap();
            let mut flat: Vec<f32> = data(h.rank());
            h.ring()
                .allreduce(
                    bytemuck::cast_slice_mut(&mut flat),
                    DataType::F32,
                    ReduceOp::Sum,
                    2,
                    deadline(),
                )
                .unwrap();
            (hier, flat)
        });
        for (rank, (hier, flat)) in results.iter().enumerate() {
            assert!(
                bytemuck::cast_slice::<f32, u32>(hier)
                    == bytemuck::cast_slice::<f32, u32>(&results[0].0),
                "{mode:?}: rank {rank} differs from rank 0"
            );
            for (i, (a, b)) in hier.iter().zip(flat).enumerate() {
                assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{i}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn allgatherv_with_ragged_and_empty_blocks_in_job_rank_order() {
    for (hosts, local) in [(2, 1), (2, 2), (2, 3), (3, 2), (3, 3)] {
        for round_robin in [false, true] {
            let lay = layout(hosts, local, round_robin);
            let np = lay.size();
            for salt in 0..4 {
                // Some ranks contribute nothing; sizes are not multiples of anything.
                let sizes: Vec<usize> = (0..np)
                    .map(|r| [0, 1, 7, 1000, 33_333][(mix(r, salt, 3) % 5) as usize])
                    .collect();
                let block = |r: usize| -> Vec<u8> {
                    (0..sizes[r]).map(|i| mix(r, i, salt) as u8).collect()
                };
                let want: Vec<u8> = (0..np).flat_map(block).collect();
                let results = on_cluster(&lay, 1000, HierarchicalMode::Split, |h| {
                    let mut out = vec![0u8; want.len()];
                    h.allgatherv(&block(h.rank()), &mut out, &sizes, salt as u64, deadline())
                        .unwrap();
                    (out, h.native().hierarchical_calls())
                });
                for (rank, (out, calls)) in results.iter().enumerate() {
                    assert!(*out == want, "{hosts}x{local} rr={round_robin} rank {rank}");
                    assert_eq!(*calls, (0, 1));
                }
            }
        }
    }
}

#[test]
fn adasum_runs_flat_and_matches_the_reference() {
    use crate::collectives::adasum_reference;
    use crate::collectives::conformance::adasum::{close, decode, encode, values};
    // 2 hosts × 2 and 3 hosts × 2 (6 ranks: not a power of two), both modes.
    for (hosts, local) in [(2, 2), (3, 2)] {
        let lay = Layout::uniform(hosts, local);
        let np = lay.size();
        for mode in [HierarchicalMode::Split, HierarchicalMode::Leader] {
            let results = on_cluster(&lay, 64, mode, |h| {
                let mut buf = encode(DataType::F32, &values(h.rank(), 301, 5));
                h.allreduce(&mut buf, DataType::F32, ReduceOp::Adasum, 0, deadline())
                    .unwrap();
                (buf, h.native().hierarchical_calls())
            });
            let inputs: Vec<Vec<u8>> = (0..np)
                .map(|r| encode(DataType::F32, &values(r, 301, 5)))
                .collect();
            let want = adasum_reference(&inputs, DataType::F32, &[301]).unwrap();
            for (buf, calls) in &results {
                assert_eq!(buf, &results[0].0, "every rank holds the same bits");
                assert_eq!(*calls, (0, 0), "Adasum must not take the hierarchical path");
            }
            let (got, want) = (
                decode(DataType::F32, &results[0].0),
                decode(DataType::F32, &want),
            );
            close(DataType::F32, np, &[301], &got, &want).unwrap();
        }
    }
}

#[test]
fn turned_off_ops_run_flat() {
    let lay = Layout::uniform(2, 2);
    let results = run_ranks(LocalTransport::create(4), |_, t| {
        let h = build_with(&lay, t, 4096, |h| {
            h.with_mode(HierarchicalMode::Split).with_ops(false, true)
        });
        let mut buf = vec![1u8; 100];
        h.allreduce(&mut buf, DataType::U8, ReduceOp::Sum, 0, deadline())
            .unwrap();
        let mut out = vec![0u8; 4];
        h.allgatherv(&[h.rank() as u8], &mut out, &[1; 4], 1, deadline())
            .unwrap();
        (buf, out, h.native().hierarchical_calls())
    });
    for (buf, out, calls) in results {
        assert!(buf.iter().all(|&x| x == 4));
        assert_eq!(out, vec![0, 1, 2, 3]);
        assert_eq!(calls, (0, 1));
    }
}

#[test]
fn layouts_of_uneven_or_contradictory_hosts_are_refused_with_the_reason() {
    let p = |lr, ls, cr, cs| Place {
        local_rank: lr,
        local_size: ls,
        cross_rank: cr,
        cross_size: cs,
    };
    // horovodrun -H a:2,b:1: local rank 1 exists on one host only.
    let uneven = [p(0, 2, 0, 2), p(1, 2, 0, 1), p(0, 1, 1, 2)];
    let e = Layout::from_places(&uneven).unwrap_err();
    assert!(e.contains("different numbers of ranks"), "{e}");
    let twice = [p(0, 2, 0, 2), p(0, 2, 0, 2), p(0, 2, 1, 2), p(1, 2, 1, 2)];
    let e = Layout::from_places(&twice).unwrap_err();
    assert!(e.contains("ranks 0 and 1 both"), "{e}");
    let outside = [p(0, 1, 0, 2), p(0, 1, 2, 2)];
    let e = Layout::from_places(&outside).unwrap_err();
    assert!(e.contains("outside"), "{e}");
    let short = [p(0, 2, 0, 2), p(1, 2, 0, 2)];
    assert!(Layout::from_places(&short).is_err());
    for b in [p(1, 2, 3, 4), p(u32::MAX, 0, 7, 1)] {
        assert_eq!(Place::from_bytes(&b.to_bytes()), b);
    }
}

#[test]
fn a_dead_rank_on_another_host_is_named_and_nobody_hangs() {
    let lay = Layout::uniform(2, 2);
    for (mode, pipeline) in [
        (HierarchicalMode::Split, 0),
        (HierarchicalMode::Split, 10_000),
        (HierarchicalMode::Leader, 0),
    ] {
        let start = Instant::now();
        let results = on_cluster_piped(&lay, 4096, mode, pipeline, |h| {
            if h.rank() == 3 {
                h.ring().abort("rank 3 died on purpose");
                return None;
            }
            let mut buf = vec![1u8; 100_000];
            let d = deadline_after(Duration::from_secs(20));
            Some(h.allreduce(&mut buf, DataType::U8, ReduceOp::Sum, 0, d))
        });
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{mode:?}: too slow"
        );
        for (rank, r) in results.iter().enumerate().take(3) {
            assert!(matches!(r, Some(Err(_))), "{mode:?} rank {rank}: {r:?}");
        }
        // Rank 2 shares rank 3's host and sees it go. On host 0, the rank whose cross-host
        // ring includes host 1 (rank 1 in split mode, the leader rank 0 in leader mode) names
        // rank 3 too: directly, or through rank 2 giving up because of it.
        let e = results[2].as_ref().unwrap().as_ref().unwrap_err();
        assert!(
            matches!(
                e,
                CollectiveError::Transport(TransportError::ConnectionLost { peer: 3, .. })
            ),
            "{mode:?}: {e:?}"
        );
        let across = if mode == HierarchicalMode::Split {
            1
        } else {
            0
        };
        let e = results[across].as_ref().unwrap().as_ref().unwrap_err();
        assert!(e.to_string().contains("rank 3"), "{mode:?}: {e}");
    }
}

/// Two "hosts" of two ranks in one process: each host's ranks share a real shared-memory
/// group, and the cross-host rings run over the in-process transport.
fn shm_cluster<R: Send>(f: impl Fn(&Hier) -> R + Sync) -> Vec<R> {
    let lay = Layout::uniform(2, 2);
    let jobs: Vec<String> = (0..2)
        .map(|h| hora_shm::unique_job_name(&format!("hier-test-h{h}")))
        .collect();
    run_ranks(LocalTransport::create(4), |_, t| {
        let job: Arc<dyn Transport> = Arc::new(t.clone());
        let (h, l) = lay.place_of(t.rank());
        let mut cfg = ShmConfig::new(l, 2, jobs[h].clone());
        // Small slices: many pipeline steps and slot reuse in every call.
        cfg.slice_bytes = 256;
        cfg.connect_timeout = Duration::from_secs(30);
        let group = Box::new(ShmGroup::connect(&cfg).unwrap());
        let host: Arc<dyn Transport> =
            Arc::new(SubTransport::new(job.clone(), lay.host_ranks(h)).unwrap());
        let cross: Arc<dyn Transport> =
            Arc::new(SubTransport::new(job.clone(), lay.cross_ranks(l)).unwrap());
        let local = Dispatch::new(group, Ring::new(host).with_segment_bytes(4096));
        let hier = Hierarchical::new(
            lay.clone(),
            t.rank(),
            Box::new(local),
            Box::new(Ring::new(cross).with_segment_bytes(4096)),
        )
        .local_errors_name_local_ranks()
        // Large allreduces below run pipelined in pieces of ~64 KiB.
        .with_pipeline_bytes(64 << 10);
        f(&Dispatch::new(
            Box::new(hier),
            Ring::new(job.clone()).with_segment_bytes(4096),
        ))
    })
}

#[test]
fn over_real_shared_memory_every_dtype_and_op() {
    let sizes = [1usize, 3, 1001, 30_000, 70_001];
    let results = shm_cluster(|h| {
        let out = allreduce_every_case(h, &sizes);
        let sizes = [5usize, 0, 70_000, 3];
        let mut gathered = vec![0u8; sizes.iter().sum()];
        let mine = vec![h.rank() as u8 + 1; sizes[h.rank()]];
        h.allgatherv(&mine, &mut gathered, &sizes, 99, deadline())
            .unwrap();
        (out, gathered, h.native().hierarchical_calls())
    });
    let want_gather: Vec<u8> = [5usize, 0, 70_000, 3]
        .iter()
        .enumerate()
        .flat_map(|(r, &n)| vec![r as u8 + 1; n])
        .collect();
    assert_every_case(
        &results.iter().map(|r| &r.0).collect::<Vec<_>>(),
        4,
        &sizes,
        "shm",
    );
    let calls = (sizes.len() * DataType::ALL.len() * OPS.len()) as u64;
    for (_, gathered, c) in &results {
        assert!(*gathered == want_gather);
        assert_eq!(*c, (calls, 1));
    }
}

#[test]
fn a_host_peer_dying_in_shared_memory_is_named_by_job_rank() {
    let results = shm_cluster(|h| {
        // Rank 2 (local rank 0 of host 1) gives up; rank 3 shares its host.
        if h.rank() == 2 {
            h.native().local.abort("rank 2 gave up on purpose");
            h.ring().abort("rank 2 gave up on purpose");
            return None;
        }
        let mut buf = vec![1u8; 100_000];
        let d = deadline_after(Duration::from_secs(20));
        Some(h.allreduce(&mut buf, DataType::U8, ReduceOp::Sum, 0, d))
    });
    let e = results[3].as_ref().unwrap().as_ref().unwrap_err();
    assert_eq!(e.peer(), Some(2), "{e:?}");
    assert!(matches!(results[0], Some(Err(_))), "{:?}", results[0]);
    assert!(matches!(results[1], Some(Err(_))), "{:?}", results[1]);
}

/// The whole engine on hierarchical collectives: fusion, average, prescale and postscale are
/// applied once, as on the flat ring.
#[test]
fn engine_fuses_and_scales_once_over_hierarchical_collectives() {
    let lay = Layout::uniform(2, 2);
    let n = lay.size();
    let results = run_ranks(LocalTransport::create(n), |r, t| {
        let (h, l) = lay.place_of(r);
        let topo = Topology {
            rank: r,
            size: n,
            local_rank: l,
            local_size: 2,
            cross_rank: h,
            cross_size: 2,
        };
        let tuning = Tuning {
            segment_bytes: 4096,
            ..Tuning::default()
        };
        let job: Arc<dyn Transport> = Arc::new(t.clone());
        let hier = build(&lay, t, 4096, HierarchicalMode::Split);
        let e = Engine::start_with(topo, tuning, job, Some(Box::new(hier))).unwrap();
        // Many small tensors submitted at once fuse; two options per op.
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let v = vec![(r + i) as f32; i * 37 + 1];
                let (op, opts) = if i % 2 == 0 {
                    (ReduceOp::Average, OpOptions::default())
                } else {
                    (
                        ReduceOp::Sum,
                        OpOptions {
                            prescale: 2.0,
                            postscale: 0.25,
                        },
                    )
                };
                e.allreduce_async(
                    &format!("t{i}"),
                    DataType::F32,
                    &[(i * 37 + 1) as u64],
                    Box::new(v),
                    op,
                    opts,
                )
            })
            .collect();
        let outs: Vec<Vec<f32>> = handles
            .into_iter()
            .map(|h| h.wait().unwrap().take_data::<Vec<f32>>().unwrap())
            .collect();
        let gathered = e
            .allgather_async(
                "g",
                DataType::I32,
                &[r as u64 + 1],
                Box::new(vec![r as i32; r + 1]),
            )
            .wait()
            .unwrap()
            .output
            .unwrap()
            .to_vec::<i32>();
        e.shutdown();
        (outs, gathered)
    });
    let ranks_sum = |i: usize| (0..n).map(|r| (r + i) as f32).sum::<f32>();
    for (outs, gathered) in results {
        for (i, v) in outs.iter().enumerate() {
            let want = if i % 2 == 0 {
                ranks_sum(i) / n as f32
            } else {
                ranks_sum(i) * 2.0 * 0.25
            };
            assert_eq!(v.len(), i * 37 + 1);
            assert!(v.iter().all(|&x| x == want), "t{i}: {} vs {want}", v[0]);
        }
        assert_eq!(gathered, vec![0, 1, 1, 2, 2, 2, 3, 3, 3, 3]);
    }
}
