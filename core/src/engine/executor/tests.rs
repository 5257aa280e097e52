//! The executor on its own: no engine, queue, coordinator or background thread, only
//! collectives over the in-process transport (one thread per rank).

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use hora_transport::{AdaptiveSpin, LocalTransport, Transport};

use super::{Entry, Executor};
use crate::collectives::{Collectives, Ring};
use crate::coordinator::{Response, ResponseError, TensorInfo};
use crate::error::Error;
use crate::handle::HandleState;
use crate::types::{CollectiveKind, DataType, ReduceOp};

fn entry(name: &str, data: Vec<f32>) -> Option<Entry> {
    Some(Entry {
        name: name.to_string(),
        data: Some(Box::new(data)),
        handle: HandleState::new(
            name.to_string(),
            Arc::new(AdaptiveSpin::new(Duration::ZERO)),
        ),
    })
}

fn fused(names: &[(&str, u64)], op: ReduceOp) -> Response {
    Response {
        kind: CollectiveKind::Allreduce,
        dtype: DataType::F32,
        op,
        root: 0,
        prescale: 1.0,
        postscale: 1.0,
        tensors: names
            .iter()
            .map(|&(n, len)| TensorInfo::new(n, vec![len]))
            .collect(),
        error: None,
    }
}

/// Runs `f` with one executor per rank (each over its own ring) and returns the results.
fn with_executors<R: Send>(n: usize, f: impl Fn(usize, &mut Executor) -> R + Sync) -> Vec<R> {
    let transports = LocalTransport::create(n);
    thread::scope(|s| {
        let hs: Vec<_> = transports
            .into_iter()
            .enumerate()
            .map(|(r, t)| {
                let f = &f;
                s.spawn(move || {
                    let t: Arc<dyn Transport> = Arc::new(t);
                    let c: Box<dyn Collectives> = Box::new(Ring::new(t));
                    let mut ex = Executor::new(c, Duration::from_secs(10));
                    f(r, &mut ex)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn a_fused_allreduce_returns_every_tensor_and_a_joined_rank_contributes_nothing() {
    let out = with_executors(3, |rank, ex| {
        let resp = fused(&[("a", 2), ("b", 3)], ReduceOp::Average);
        // Rank 2 has joined: it holds neither tensor.
        let entries = if rank == 2 {
            vec![None, None]
        } else {
            vec![
                entry("a", vec![rank as f32 + 1.0; 2]),
                entry("b", vec![6.0; 3]),
            ]
        };
        let mut done = ex.run(resp, entries);
        assert!(done.take_stop().is_none());
        done.map(|(e, r)| {
            let mut c = r.unwrap();
            (e.name, c.take_data::<Vec<f32>>().unwrap())
        })
        .collect::<Vec<_>>()
    });
    // Average over the job's three ranks: (1 + 2 + 0) / 3 and (6 + 6 + 0) / 3.
    let want = vec![
        ("a".to_string(), vec![1.0; 2]),
        ("b".to_string(), vec![4.0; 3]),
    ];
    assert_eq!(out[0], want);
    assert_eq!(out[1], want);
    assert!(out[2].is_empty());
}

#[test]
fn two_executors_in_one_process_run_independently() {
    // Two instances per rank over separate transports (as two process sets would be): each
    // numbers its own collectives and keeps its own fusion buffer.
    let second = std::sync::Mutex::new(LocalTransport::create(2));
    let out = with_executors(2, |rank, first| {
        let t: Arc<dyn Transport> = Arc::new(second.lock().unwrap()[rank].clone());
        let mut other = Executor::new(Box::new(Ring::new(t)), Duration::from_secs(10));
        let a = first.run(
            fused(&[("x", 4), ("y", 4)], ReduceOp::Sum),
            vec![entry("x", vec![1.0; 4]), entry("y", vec![2.0; 4])],
        );
        let b = other.run(
            fused(&[("z", 1)], ReduceOp::Max),
            vec![entry("z", vec![rank as f32])],
        );
        let take = |c: super::Completions| -> Vec<Vec<f32>> {
            c.map(|(_, r)| r.unwrap().take_data::<Vec<f32>>().unwrap())
                .collect()
        };
        (take(a), take(b), first.seq, other.seq)
    });
    for (a, b, s1, s2) in out {
        assert_eq!(a, vec![vec![2.0; 4], vec![4.0; 4]]);
        assert_eq!(b, vec![vec![1.0]]);
        assert_eq!((s1, s2), (1, 1));
    }
}

#[test]
fn a_mismatch_fails_each_entry_and_does_not_stop_the_engine() {
    with_executors(1, |_, ex| {
        let mut resp = fused(&[("w", 1)], ReduceOp::Sum);
        resp.error = Some(ResponseError {
            field: "shape".into(),
            message: "rank 0: [1], rank 1: [2]".into(),
            ranks: vec![1],
        });
        let mut done = ex.run(resp, vec![entry("w", vec![0.0])]);
        assert!(done.take_stop().is_none());
        let results: Vec<_> = done.collect();
        assert_eq!(results.len(), 1);
        let err = results.into_iter().next().unwrap().1.unwrap_err();
        assert!(
            matches!(&err, Error::Mismatch { tensor, field, .. } if tensor == "w" && field == "shape"),
            "{err}"
        );
    });
}

#[test]
fn a_failed_collective_fails_its_entries_and_returns_the_error_to_stop_on() {
    let transports = LocalTransport::create(2);
    let t0: Arc<dyn Transport> = Arc::new(transports[0].clone());
    transports[1].abort("rank 1 crashed");
    let mut ex = Executor::new(Box::new(Ring::new(t0)), Duration::from_secs(10));
    let mut done = ex.run(
        fused(&[("g", 2)], ReduceOp::Sum),
        vec![entry("g", vec![1.0; 2])],
    );
    let stop = done.take_stop().expect("the engine must stop");
    assert!(
        matches!(&stop, Error::Transport { op, tensor, .. } if op == "allreduce" && tensor == "g"),
        "{stop}"
    );
    let (e, r) = done.next().expect("the entry comes back");
    assert_eq!(e.name, "g");
    assert!(matches!(r, Err(Error::Transport { .. })));
    assert!(done.next().is_none());
}
