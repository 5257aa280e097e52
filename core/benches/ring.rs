//! Ring allreduce over the in-process transport: algorithm and reduction cost without a
//! network (the in-process transport copies every message, so this is a lower bound on speed).
//!
//! Quick run: `cargo bench -p hora --bench ring -- --warm-up-time 1 --measurement-time 2`.

#![forbid(unsafe_code)]

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hora::collectives::{Collectives, Ring};
use hora::{DataType, ReduceOp};
use hora_transport::{LocalTransport, deadline_after};

/// Runs `iters` allreduces of `bytes` on `np` rank threads; returns rank 0's elapsed time.
fn run(np: usize, bytes: usize, iters: u64) -> Duration {
    let rings: Vec<_> = LocalTransport::create(np)
        .into_iter()
        .map(|t| Ring::new(Arc::new(t)))
        .collect();
    let start = Barrier::new(np);
    thread::scope(|s| {
        let handles: Vec<_> = rings
            .iter()
            .map(|ring| {
                let start = &start;
                s.spawn(move || {
                    let mut buf = vec![0u8; bytes];
                    // Touch the scratch once so the timing excludes first-use page faults.
                    let deadline = deadline_after(Duration::from_secs(600));
                    ring.allreduce(&mut buf, DataType::F32, ReduceOp::Sum, 0, deadline)
                        .unwrap();
                    start.wait();
                    let t0 = std::time::Instant::now();
                    for i in 0..iters {
                        ring.allreduce(&mut buf, DataType::F32, ReduceOp::Sum, i + 1, deadline)
                            .unwrap();
                    }
                    t0.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .next()
            .unwrap()
    })
}

fn allreduce(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_allreduce_local");
    group.sample_size(10);
    for np in [2usize, 4] {
        for bytes in [1usize << 20, 16 << 20] {
            group.throughput(Throughput::Bytes(bytes as u64));
            group.bench_function(
                BenchmarkId::new(format!("np{np}"), format!("{}MiB", bytes >> 20)),
                |b| b.iter_custom(|iters| run(np, bytes, iters)),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, allreduce);
criterion_main!(benches);
