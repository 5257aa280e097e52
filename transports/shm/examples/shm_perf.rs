//! Raw shared-memory allreduce timing, without the engine: `cargo run --release -p hora-shm
//! --example shm_perf -- [np] [max_bytes] [slice_bytes] [depth]`. Starts `np` processes (this
//! binary again), times f32 sum allreduce from 4 KiB up to `max_bytes` (×4 per step) and prints
//! the median time and busbw of each size, as hora-bench does.

use std::process::Command;
use std::time::{Duration, Instant};

use hora_shm::{ShmConfig, ShmGroup};
use hora_transport::{DataType, ReduceOp, deadline_after};

fn cast(b: &[u8]) -> &[f32] {
    assert!(b.as_ptr().align_offset(4) == 0 && b.len().is_multiple_of(4));
    // SAFETY: aligned and a whole number of f32s (checked above); every bit pattern is an f32.
    unsafe { std::slice::from_raw_parts(b.as_ptr().cast(), b.len() / 4) }
}

fn cast_mut(b: &mut [u8]) -> &mut [f32] {
    assert!(b.as_ptr().align_offset(4) == 0 && b.len().is_multiple_of(4));
    // SAFETY: as in `cast`, and the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr().cast(), b.len() / 4) }
}

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let np = arg(1, 2);
    let max = arg(2, 256 << 20);
    let slice = arg(3, ShmConfig::new(0, 1, "").slice_bytes);
    let depth = arg(4, ShmConfig::new(0, 1, "").depth);
    let Ok(rank) = std::env::var("SHM_PERF_RANK") else {
        let job = hora_shm::unique_job_name("shm-perf");
        let exe = std::env::current_exe().expect("own path");
        let kids: Vec<_> = (0..np)
            .map(|r| {
                Command::new(&exe)
                    .args(std::env::args().skip(1))
                    .env("SHM_PERF_RANK", r.to_string())
                    .env("SHM_PERF_JOB", &job)
                    .spawn()
                    .expect("spawn a rank")
            })
            .collect();
        for mut k in kids {
            assert!(k.wait().expect("wait").success());
        }
        return;
    };
    let rank: usize = rank.parse().expect("rank");
    let mut cfg = ShmConfig::new(rank, np, std::env::var("SHM_PERF_JOB").expect("job"));
    cfg.slice_bytes = slice;
    cfg.depth = depth;
    let g = ShmGroup::connect(&cfg).expect("connect");
    let dl = || deadline_after(Duration::from_secs(60));
    let mut bar = vec![0u8; 4];
    let mut bytes = 4096;
    if rank == 0 {
        println!(
            "# np {np} slice {slice} depth {depth} oversubscribed {}",
            g.oversubscribed()
        );
    }
    while bytes <= max {
        let (warm, iters) = match bytes {
            0..=65_536 => (20, 200),
            65_537..=1_048_576 => (10, 50),
            1_048_577..=16_777_216 => (3, 15),
            16_777_217..=67_108_864 => (2, 8),
            _ => (1, 5),
        };
        let mut buf = vec![0u8; bytes];
        for v in cast_mut(&mut buf) {
            *v = (rank + 1) as f32;
        }
        g.allreduce(&mut buf, DataType::F32, ReduceOp::Sum, dl())
            .unwrap();
        let want = (np * (np + 1) / 2) as f32;
        assert!(cast(&buf).iter().all(|&v| v == want), "wrong result");
        // Each rank times its own call after a barrier (a tiny allreduce); rank 0 reports.
        let mut times = Vec::new();
        for i in 0..warm + iters {
            g.allreduce(&mut bar, DataType::F32, ReduceOp::Sum, dl())
                .unwrap();
            let t = Instant::now();
            g.allreduce(&mut buf, DataType::F32, ReduceOp::Sum, dl())
                .unwrap();
            if i >= warm {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let t = times[times.len() / 2];
        if rank == 0 {
            let busbw = bytes as f64 / t / 1e9 * 2.0 * (np as f64 - 1.0) / np as f64;
            println!("{bytes:>12} {:>10.1} us {busbw:>8.3} GB/s", t * 1e6);
        }
        bytes *= 4;
    }
}
