//! Engine tests with ranks as threads over the in-process transport.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use hora_transport::{LocalTransport, Transport};

use super::*;
use crate::config::Topology;
use crate::error::Error;

fn topo(rank: usize, size: usize) -> Topology {
    Topology {
        rank,
        size,
        local_rank: rank,
        local_size: size,
        cross_rank: 0,
        cross_size: 1,
    }
}

fn tuning() -> Tuning {
    Tuning {
        segment_bytes: 4096,
        ..Tuning::default()
    }
}

/// Runs `f` on `n` engines (one thread per rank) and returns the results in rank order.
fn with_engines<R: Send>(n: usize, tuning: Tuning, f: impl Fn(&Engine) -> R + Sync) -> Vec<R> {
    let transports = LocalTransport::create(n);
    thread::scope(|s| {
        let hs: Vec<_> = transports
            .into_iter()
            .enumerate()
            .map(|(r, t)| {
                let f = &f;
                let tuning = tuning.clone();
                s.spawn(move || {
                    let t: Arc<dyn Transport> = Arc::new(t);
                    let e = Engine::start(topo(r, n), tuning, t).unwrap();
                    let out = f(&e);
                    e.shutdown();
                    out
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn allreduce_f32(e: &Engine, name: &str, v: Vec<f32>, op: ReduceOp) -> Result<Vec<f32>, Error> {
    let shape = [v.len() as u64];
    let mut c = e
        .allreduce_async(
            name,
            DataType::F32,
            &shape,
            Box::new(v),
            op,
            OpOptions::default(),
        )
        .wait()?;
    Ok(c.take_data::<Vec<f32>>().unwrap())
}

#[test]
fn allreduce_sum_and_average_over_ranks() {
    for n in [1, 2, 3, 4] {
        let out = with_engines(n, tuning(), |e| {
            let r = e.topology().rank as f32;
            let sum = allreduce_f32(e, "x", vec![r + 1.0; 1000], ReduceOp::Sum).unwrap();
            let avg = allreduce_f32(e, "y", vec![r; 17], ReduceOp::Average).unwrap();
            (sum, avg)
        });
        let total = (n * (n + 1) / 2) as f32;
        let mean = (0..n).sum::<usize>() as f32 / n as f32;
        for (sum, avg) in out {
            assert!(sum.iter().all(|&x| x == total), "n={n}");
            assert!(
                avg.iter().all(|&x| (x - mean).abs() < 1e-6),
                "n={n}: {avg:?}"
            );
        }
    }
}

#[test]
fn many_async_tensors_fuse_and_complete_in_any_submission_order() {
    let n = 3;
    let out = with_engines(n, tuning(), |e| {
        let rank = e.topology().rank;
        let mut names: Vec<usize> = (0..40).collect();
        // Each rank submits in a different order: negotiation must still match them up.
        names.rotate_left(rank * 7);
        let handles: Vec<_> = names
            .iter()
            .map(|&i| {
                let v = vec![(i + rank) as f32; i + 1];
                let h = e.allreduce_async(
                    &format!("g{i}"),
                    DataType::F32,
                    &[(i + 1) as u64],
                    Box::new(v),
                    ReduceOp::Sum,
                    OpOptions {
                        prescale: 2.0,
                        postscale: 0.5,
                    },
                );
                (i, h)
            })
            .collect();
        handles
            .into_iter()
            .map(|(i, h)| (i, h.wait().unwrap().take_data::<Vec<f32>>().unwrap()))
            .collect::<Vec<_>>()
    });
    for per_rank in out {
        for (i, v) in per_rank {
            let expect = (0..n).map(|r| (i + r) as f32).sum::<f32>();
            assert_eq!(v, vec![expect; i + 1], "tensor g{i}");
        }
    }
}

#[test]
fn repeated_steps_use_the_cache_and_stay_correct() {
    let out = with_engines(2, tuning(), |e| {
        let r = e.topology().rank as i64;
        (0..50)
            .map(|step| {
                let shape = [3u64];
                let h = e.allreduce_async(
                    "w",
                    DataType::I64,
                    &shape,
                    Box::new(vec![r + step; 3]),
                    ReduceOp::Max,
                    OpOptions::default(),
                );
                h.wait().unwrap().take_data::<Vec<i64>>().unwrap()[0]
            })
            .collect::<Vec<_>>()
    });
    for v in out {
        assert_eq!(v, (0..50).map(|s| 1 + s).collect::<Vec<i64>>());
    }
}

#[test]
fn allgather_broadcast_alltoall_reducescatter() {
    let n = 3;
    let out = with_engines(n, tuning(), |e| {
        let r = e.topology().rank;
        // allgather: rank r contributes r+1 rows of 2 columns.
        let rows = r + 1;
        let data: Vec<i32> = (0..rows * 2).map(|i| (r * 100 + i) as i32).collect();
        let c = e
            .allgather_async("ag", DataType::I32, &[rows as u64, 2], Box::new(data))
            .wait()
            .unwrap();
        let gathered: Vec<i32> = c.output.unwrap().to_vec();
        assert_eq!(c.output_shape, vec![6, 2]);
        // broadcast from rank 2.
        let b = e
            .broadcast_async("b", DataType::F64, &[4], Box::new(vec![r as f64; 4]), 2)
            .wait();
        let b: Vec<f64> = b.unwrap().take_data::<Vec<f64>>().unwrap();
        // alltoall: rank r sends d+1 rows to rank d.
        let splits: Vec<u64> = (0..n as u64).map(|d| d + 1).collect();
        let total: u64 = splits.iter().sum();
        let data: Vec<u8> = (0..total).map(|i| (r as u64 * 10 + i) as u8).collect();
        let c = e
            .alltoall_async("a2a", DataType::U8, &[total], Box::new(data), splits)
            .wait()
            .unwrap();
        let recv: Vec<u8> = c.output.unwrap().to_vec();
        let recv_splits = c.received_splits.clone();
        // reducescatter of 7 rows: ranks get 3, 2, 2.
        let c = e
            .reducescatter_async(
                "rs",
                DataType::F32,
                &[7],
                Box::new(vec![1.0f32; 7]),
                ReduceOp::Sum,
                OpOptions::default(),
            )
            .wait()
            .unwrap();
        let rs: Vec<f32> = c.output.unwrap().to_vec();
        (gathered, b, recv, recv_splits, rs)
    });
    for (r, (gathered, b, recv, recv_splits, rs)) in out.into_iter().enumerate() {
        let expect: Vec<i32> = (0..n)
            .flat_map(|s| (0..(s + 1) * 2).map(move |i| (s * 100 + i) as i32))
            .collect();
        assert_eq!(gathered, expect);
        assert_eq!(b, vec![2.0; 4]);
        assert_eq!(recv_splits, vec![r as u64 + 1; n]);
        // From rank s we get rows starting at offset sum(splits[..r]) = r(r+1)/2.
        let off = (r * (r + 1) / 2) as u64;
        let expect: Vec<u8> = (0..n as u64)
            .flat_map(|s| (0..r as u64 + 1).map(move |i| (s * 10 + off + i) as u8))
            .collect();
        assert_eq!(recv, expect, "rank {r}");
        assert_eq!(rs, vec![3.0; if r == 0 { 3 } else { 2 }]);
    }
}

#[test]
fn mismatched_shapes_fail_on_every_rank_naming_the_tensor() {
    let out = with_engines(2, tuning(), |e| {
        let r = e.topology().rank;
        let len = 4 + r;
        let err = allreduce_f32(e, "grad/conv1", vec![1.0; len], ReduceOp::Sum).unwrap_err();
        // The engine keeps working after a mismatch.
        let ok = allreduce_f32(e, "after", vec![1.0; 2], ReduceOp::Sum).unwrap();
        (err, ok)
    });
    for (err, ok) in out {
        let text = err.to_string();
        assert!(matches!(err, Error::Mismatch { .. }), "{text}");
        assert!(
            text.contains("grad/conv1") && text.contains("shape"),
            "{text}"
        );
        assert_eq!(ok, vec![2.0, 2.0]);
    }
}

#[test]
fn join_lets_ranks_with_fewer_batches_finish() {
    let out = with_engines(3, tuning(), |e| {
        let r = e.topology().rank;
        // Rank r runs r+1 steps, then joins; joined ranks contribute zeros.
        let sums: Vec<f32> = (0..=r)
            .map(|s| allreduce_f32(e, &format!("step{s}"), vec![1.0; 8], ReduceOp::Sum).unwrap()[0])
            .collect();
        let last = e.join().unwrap();
        (sums, last)
    });
    assert_eq!(out[0].0, vec![3.0]);
    assert_eq!(out[1].0, vec![3.0, 2.0]);
    assert_eq!(out[2].0, vec![3.0, 2.0, 1.0]);
    assert!(out.iter().all(|(_, last)| *last == 2));
}

#[test]
fn zero_length_tensors_work() {
    let out = with_engines(2, tuning(), |e| {
        allreduce_f32(e, "empty", vec![], ReduceOp::Sum).unwrap()
    });
    assert!(out.iter().all(|v| v.is_empty()));
}

#[test]
fn duplicate_in_flight_name_and_bad_length_are_argument_errors() {
    with_engines(1, tuning(), |e| {
        let h = e.allreduce_async(
            "x",
            DataType::F32,
            &[3],
            Box::new(vec![0u8; 5]),
            ReduceOp::Sum,
            OpOptions::default(),
        );
        let err = h.wait().unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("'x'"),
            "{err}"
        );
        let bad_root = e
            .broadcast_async("b", DataType::U8, &[1], Box::new(vec![0u8]), 5)
            .wait()
            .unwrap_err();
        assert!(bad_root.to_string().contains("root 5"), "{bad_root}");
    });
}

#[test]
fn a_name_still_in_flight_is_refused_without_queuing_and_the_first_completes() {
    let out = with_engines(2, tuning(), |e| {
        let sum = |name: &str| {
            e.allreduce_async(
                name,
                DataType::F32,
                &[1],
                Box::new(vec![1.0f32]),
                ReduceOp::Sum,
                OpOptions::default(),
            )
        };
        // Rank 1 submits "d" only after the gate, which rank 0 enters after its duplicate: rank
        // 0's first "d" is surely still in flight when it submits the second.
        if e.topology().rank == 0 {
            let first = sum("d");
            let dup = sum("d").wait().unwrap_err();
            sum("gate").wait().unwrap();
            let v = first.wait().unwrap().take_data::<Vec<f32>>().unwrap();
            (Some(dup), v)
        } else {
            sum("gate").wait().unwrap();
            let v = sum("d").wait().unwrap().take_data::<Vec<f32>>().unwrap();
            (None, v)
        }
    });
    let dup = out[0].0.as_ref().unwrap();
    let text = dup.to_string();
    assert!(
        matches!(dup, Error::InvalidArgument { rank: 0, .. }),
        "{dup:?}"
    );
    assert!(
        text.contains("'d'") && text.contains("same name as another tensor still being processed"),
        "{text}"
    );
    assert!(text.contains("allreduce"), "{text}");
    assert!(
        out.iter().all(|o| o.1 == [2.0]),
        "the first 'd' ran once, on both ranks"
    );
}

#[test]
fn sixteen_bit_and_bool_allreduce_across_ranks_and_bool_refuses_average_and_scales() {
    let out = with_engines(3, tuning(), |e| {
        let r = e.topology().rank as i16;
        let xs: Vec<u8> = [r - 1, 1000 * r, 7]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let h = e.allreduce_async(
            "i16",
            DataType::I16,
            &[3],
            Box::new(xs),
            ReduceOp::Min,
            OpOptions::default(),
        );
        let min = h.wait().unwrap().take_data::<Vec<u8>>().unwrap();
        let flags = vec![u8::from(r == 1), 1, 0];
        let any = e
            .allreduce_async(
                "b",
                DataType::Bool,
                &[3],
                Box::new(flags.clone()),
                ReduceOp::Sum,
                OpOptions::default(),
            )
            .wait()
            .unwrap()
            .take_data::<Vec<u8>>()
            .unwrap();
        let all = e
            .allreduce_async(
                "b2",
                DataType::Bool,
                &[3],
                Box::new(flags.clone()),
                ReduceOp::Product,
                OpOptions::default(),
            )
            .wait()
            .unwrap()
            .take_data::<Vec<u8>>()
            .unwrap();
        let avg = e
            .allreduce_async(
                "bavg",
                DataType::Bool,
                &[3],
                Box::new(flags.clone()),
                ReduceOp::Average,
                OpOptions::default(),
            )
            .wait()
            .unwrap_err();
        let scaled = e
            .allreduce_async(
                "bscale",
                DataType::Bool,
                &[3],
                Box::new(flags),
                ReduceOp::Max,
                OpOptions {
                    prescale: 2.0,
                    ..OpOptions::default()
                },
            )
            .wait()
            .unwrap_err();
        (min, any, all, avg.to_string(), scaled.to_string())
    });
    let want_min: Vec<u8> = [-1i16, 0, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
    for (min, any, all, avg, scaled) in &out {
        assert_eq!(min, &want_min);
        assert_eq!(any, &[1, 1, 0], "bool sum is or");
        assert_eq!(all, &[0, 1, 0], "bool product is and");
        assert!(
            avg.contains("'bavg'") && avg.contains("cannot be averaged"),
            "{avg}"
        );
        assert!(
            scaled.contains("'bscale'") && scaled.contains("cannot be scaled"),
            "{scaled}"
        );
    }
}

#[test]
fn peer_failure_fails_pending_handles_instead_of_hanging() {
    let transports = LocalTransport::create(2);
    let t1 = transports[1].clone();
    let t0: Arc<dyn Transport> = Arc::new(transports[0].clone());
    let e0 = Engine::start(topo(0, 2), tuning(), t0).unwrap();
    // Rank 1 never submits; then it dies.
    let h = e0.allreduce_async(
        "x",
        DataType::F32,
        &[1],
        Box::new(vec![1.0f32]),
        ReduceOp::Sum,
        OpOptions::default(),
    );
    thread::sleep(Duration::from_millis(50));
    assert!(!h.poll());
    t1.abort("rank 1 crashed");
    let err = h
        .wait_timeout(Duration::from_secs(10))
        .expect("handle hung")
        .unwrap_err();
    assert!(err.to_string().contains("rank 1"), "{err}");
    // Later calls fail at once with the same cause.
    let again = allreduce_f32(&e0, "y", vec![1.0], ReduceOp::Sum).unwrap_err();
    assert!(again.to_string().contains("rank 1"), "{again}");
}

#[test]
fn shutdown_fails_later_calls() {
    with_engines(2, tuning(), |e| {
        e.barrier().unwrap();
        e.shutdown();
        let err = allreduce_f32(e, "late", vec![1.0], ReduceOp::Sum).unwrap_err();
        assert!(matches!(err, Error::ShutDown { .. }), "{err}");
    });
}

#[test]
fn timeline_records_negotiation_and_the_collective_per_tensor() {
    let path = std::env::temp_dir().join(format!("hora-timeline-{}.json", std::process::id()));
    let tuning = Tuning {
        timeline: Some(path.clone()),
        ..tuning()
    };
    with_engines(2, tuning, |e| {
        allreduce_f32(e, "grad/w\"1", vec![1.0; 64], ReduceOp::Sum).unwrap();
        e.barrier().unwrap();
    });
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let events: Vec<serde_json::Value> = serde_json::from_str(&text).expect("valid JSON trace");
    let lane = events
        .iter()
        .find(|e| e["ph"] == "M" && e["args"]["name"] == "grad/w\"1")
        .expect("a lane named after the tensor")["pid"]
        .clone();
    let phases: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["pid"] == lane && e["ph"] != "M" && e["ph"] != "X")
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["ph"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("NEGOTIATE", "B"),
        ("NEGOTIATE", "E"),
        ("ALLREDUCE", "B"),
        ("ALLREDUCE", "E"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(phases, want, "{text}");
    let ts: Vec<u64> = events
        .iter()
        .filter(|e| e["pid"] == lane && e["ph"] != "M")
        .map(|e| e["ts"].as_u64().unwrap())
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] <= w[1]),
        "timestamps go back: {ts:?}"
    );
    // Each rank's readiness is one zero-length tick named after it, inside the negotiation.
    let at = |name: &str, ph: &str| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e["pid"] == lane && e["name"] == name && e["ph"] == ph)
            .map(|e| e["ts"].as_u64().unwrap())
            .collect()
    };
    let (start, end) = (at("NEGOTIATE", "B")[0], at("NEGOTIATE", "E")[0]);
    for rank in ["0", "1"] {
        let ticks = at(rank, "X");
        assert_eq!(ticks.len(), 1, "rank {rank}: {text}");
        assert!(start <= ticks[0] && ticks[0] <= end, "rank {rank}: {text}");
    }
    assert!(
        events
            .iter()
            .filter(|e| e["ph"] == "X")
            .all(|e| e["dur"] == 0),
        "{text}"
    );
}

#[test]
fn a_dynamic_timeline_records_only_between_start_and_stop_and_marks_cycles() {
    let dir = std::env::temp_dir();
    let first = dir.join(format!("hora-timeline-dyn-{}-a.json", std::process::id()));
    let second = dir.join(format!("hora-timeline-dyn-{}-b.json", std::process::id()));
    let tuning = Tuning {
        timeline: Some("DYNAMIC".into()),
        ..tuning()
    };
    with_engines(2, tuning, |e| {
        allreduce_f32(e, "before", vec![1.0; 8], ReduceOp::Sum).unwrap();
        e.start_timeline(first.clone(), true);
        e.barrier().unwrap();
        allreduce_f32(e, "during", vec![1.0; 8], ReduceOp::Sum).unwrap();
        // Moving to another file closes the first one.
        e.start_timeline(second.clone(), false);
        e.barrier().unwrap();
        allreduce_f32(e, "second", vec![1.0; 8], ReduceOp::Sum).unwrap();
        e.stop_timeline();
        e.barrier().unwrap();
        allreduce_f32(e, "after", vec![1.0; 8], ReduceOp::Sum).unwrap();
        e.barrier().unwrap();
    });
    assert!(
        !std::path::Path::new("DYNAMIC").exists(),
        "DYNAMIC is not a file name"
    );
    let read = |p: &std::path::Path| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(p).unwrap();
        let _ = std::fs::remove_file(p);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", p.display()))
    };
    let lanes = |ev: &[serde_json::Value]| -> Vec<String> {
        ev.iter()
            .filter(|e| e["ph"] == "M")
            .map(|e| e["args"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let a = read(&first);
    let b = read(&second);
    assert!(lanes(&a).contains(&"during".to_string()), "{a:?}");
    assert!(!lanes(&a).contains(&"before".to_string()), "{a:?}");
    assert!(!lanes(&a).contains(&"second".to_string()), "{a:?}");
    assert!(
        a.iter()
            .any(|e| e["name"] == "CYCLE_START" && e["ph"] == "i")
    );
    assert!(lanes(&b).contains(&"second".to_string()), "{b:?}");
    assert!(!lanes(&b).contains(&"after".to_string()), "{b:?}");
    assert!(
        !b.iter().any(|e| e["name"] == "CYCLE_START"),
        "cycles were off"
    );
}

/// Allreduces (sum) of `[len]` f32 tensors `prefix.i` holding `rank + i`, as one group.
fn sum_group(e: &Engine, prefix: &str, count: usize, len: usize) -> Vec<Handle> {
    let r = e.topology().rank;
    let ops = (0..count)
        .map(|i| {
            let op = Op::allreduce(format!("{prefix}.{i}"), DataType::F32, &[len as u64])
                .reduce_op(ReduceOp::Sum);
            let data: Box<dyn TensorData> = Box::new(vec![(r + i) as f32; len]);
            (op, Some(data))
        })
        .collect();
    e.submit_group(ops)
}

#[test]
fn grouped_allreduce_is_correct_with_and_without_group_fusion() {
    let n = 3;
    for disable in [false, true] {
        let tuning = Tuning {
            disable_group_fusion: disable,
            fusion_threshold: 256,
            ..tuning()
        };
        let out = with_engines(n, tuning, |e| {
            // Ranks submit the two groups in different orders.
            let mut groups = [("g", 12, 9), ("h", 3, 100)];
            if e.topology().rank == 1 {
                groups.reverse();
            }
            let mut hs = sum_group(e, groups[0].0, groups[0].1, groups[0].2);
            hs.extend(sum_group(e, groups[1].0, groups[1].1, groups[1].2));
            let plain = allreduce_f32(e, "plain", vec![1.0; 4], ReduceOp::Sum).unwrap();
            let mut got: Vec<Vec<f32>> = hs
                .into_iter()
                .map(|h| h.wait().unwrap().take_data::<Vec<f32>>().unwrap())
                .collect();
            if e.topology().rank == 1 {
                got.rotate_left(3);
            }
            (got, plain)
        });
        for (got, plain) in out {
            assert_eq!(plain, vec![n as f32; 4]);
            let (g, h) = got.split_at(12);
            for (i, v) in g.iter().chain(h).enumerate() {
                let i = if i < 12 { i } else { i - 12 };
                let len = v.len();
                let expect = (0..n).map(|r| (r + i) as f32).sum::<f32>();
                assert_eq!(*v, vec![expect; len], "disable={disable} tensor {i}");
            }
        }
    }
}

#[test]
fn grouped_allgather_and_reducescatter() {
    let n = 2;
    let out = with_engines(n, tuning(), |e| {
        let r = e.topology().rank;
        let ops = (0..3)
            .map(|i| {
                let rows = r + 1 + i;
                let op = Op::allgather(format!("ag.{i}"), DataType::I32, &[rows as u64]);
                let data: Box<dyn TensorData> = Box::new(vec![(10 * r + i) as i32; rows]);
                (op, Some(data))
            })
            .collect();
        let gathered: Vec<Vec<i32>> = e
            .submit_group(ops)
            .into_iter()
            .map(|h| h.wait().unwrap().output.unwrap().to_vec())
            .collect();
        let ops = (0..2)
            .map(|i| {
                let op = Op::reducescatter(format!("rs.{i}"), DataType::F32, &[4])
                    .reduce_op(ReduceOp::Sum);
                let data: Box<dyn TensorData> = Box::new(vec![(r + i) as f32; 4]);
                (op, Some(data))
            })
            .collect();
        let scattered: Vec<Vec<f32>> = e
            .submit_group(ops)
            .into_iter()
            .map(|h| h.wait().unwrap().output.unwrap().to_vec())
            .collect();
        (gathered, scattered)
    });
    for (gathered, scattered) in out {
        for (i, g) in gathered.iter().enumerate() {
            let mut expect = vec![i as i32; 1 + i];
            expect.extend(vec![(10 + i) as i32; 2 + i]);
            assert_eq!(*g, expect, "allgather {i}");
        }
        for (i, s) in scattered.iter().enumerate() {
            assert_eq!(*s, vec![(1 + 2 * i) as f32; 2], "reducescatter {i}");
        }
    }
}

#[test]
fn ranks_grouping_differently_fail_on_every_rank_without_hanging() {
    let out = with_engines(2, tuning(), |e| {
        let count = if e.topology().rank == 0 { 3 } else { 2 };
        sum_group(e, "g", count, 4)
            .into_iter()
            .map(|h| h.wait().unwrap_err().to_string())
            .collect::<Vec<_>>()
    });
    for errs in out {
        for err in errs {
            assert!(err.contains("grouped"), "{err}");
        }
    }
}

#[test]
fn a_bad_member_or_a_repeated_name_fails_the_whole_group_before_queueing() {
    with_engines(1, tuning(), |e| {
        let ops = vec![
            (
                Op::allreduce("ok", DataType::F32, &[2]),
                Some(Box::new(vec![0f32; 2]) as Box<dyn TensorData>),
            ),
            (
                Op::allreduce("short", DataType::F32, &[3]),
                Some(Box::new(vec![0f32; 2]) as Box<dyn TensorData>),
            ),
        ];
        for h in e.submit_group(ops) {
            let err = h.wait().unwrap_err().to_string();
            assert!(err.contains("'short'") && err.contains("bytes"), "{err}");
        }
        let twice = (0..2)
            .map(|_| {
                (
                    Op::allreduce("dup", DataType::F32, &[1]),
                    Some(Box::new(vec![0f32]) as Box<dyn TensorData>),
                )
            })
            .collect();
        for h in e.submit_group(twice) {
            let err = h.wait().unwrap_err().to_string();
            assert!(err.contains("twice in one group"), "{err}");
        }
        assert_eq!(e.in_flight(), 0, "nothing was queued");
        assert!(e.submit_group(Vec::new()).is_empty());
        // The names are free again: a good group goes through.
        let hs = sum_group(e, "after", 2, 3);
        for h in hs {
            assert_eq!(h.wait().unwrap().take_data::<Vec<f32>>().unwrap().len(), 3);
        }
    });
}
