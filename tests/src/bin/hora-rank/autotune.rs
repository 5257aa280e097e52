//! `autotune STEPS TENSORS ELEMS`: a training loop of many small allreduces (every step
//! submits TENSORS tensors of ELEMS f32 at once and waits for all), checking every result, so
//! autotune's changes of fusion, segment size and cache between steps are seen to keep the
//! sums right. Prints the steps per second of the second half (after tuning, when it ends in
//! time) for the benchmark.

use std::time::Instant;

use hora::api;
use hora::{Error, ReduceOp};

pub(crate) fn many_small(args: &[String]) -> Result<(), String> {
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (steps, tensors, elems) = (arg(1, 200), arg(2, 64), arg(3, 1024));
    let e = |e: Error| e.to_string();
    let rank = api::rank().map_err(e)?;
    let n = api::size().map_err(e)?;
    let names: Vec<String> = (0..tensors).map(|t| format!("layer{t}.grad")).collect();
    let mut half_start = Instant::now();
    for step in 0..steps {
        if step == steps / 2 {
            half_start = Instant::now();
        }
        let handles = names
            .iter()
            .enumerate()
            .map(|(t, name)| {
                let v: Vec<f32> = (0..elems)
                    .map(|i| (rank * 7 + t + i % 5 + step % 3) as f32)
                    .collect();
                api::allreduce_async(name, v, ReduceOp::Sum)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(e)?;
        for (t, h) in handles.into_iter().enumerate() {
            let mut c = h.wait().map_err(e)?;
            let out: Vec<f32> = c
                .take_data()
                .ok_or("allreduce came back with another type")?;
            for (i, x) in out.iter().enumerate() {
                let want: usize = (0..n).map(|r| r * 7 + t + i % 5 + step % 3).sum();
                if *x != want as f32 {
                    return Err(format!("step {step} tensor {t} element {i}: {x} != {want}"));
                }
            }
        }
    }
    let secs = half_start.elapsed().as_secs_f64();
    let done = steps - steps / 2;
    println!(
        "rank {rank}: last {done} steps {:.1} steps/s ({:.1} MB/s of allreduce)",
        done as f64 / secs,
        (done * tensors * elems * 4) as f64 / secs / 1e6
    );
    Ok(())
}
