//! Data-parallel SGD on a linear model with synthetic data: the smallest real training loop.
//!
//! Each rank owns a different shard of the data. Per step it computes the gradient of the mean
//! squared error on its shard, the ranks average their gradients with an allreduce, and each
//! applies the same update, so the parameters stay identical everywhere.

#![forbid(unsafe_code)]

use hora::ReduceOp;

/// Features per sample.
const DIM: usize = 16;
/// Samples per rank.
const SHARD: usize = 4096;

/// Deterministic pseudo-random numbers in [-1, 1).
fn lcg(state: &mut u64) -> f32 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn main() -> hora::Result<()> {
    hora::init()?;
    let (rank, size) = (hora::rank()?, hora::size()?);

    // The true weights are the same everywhere; each rank's samples differ.
    let mut seed = 42u64;
    let truth: Vec<f32> = (0..DIM).map(|_| lcg(&mut seed)).collect();
    let mut seed = 1000 + rank as u64;
    let xs: Vec<Vec<f32>> = (0..SHARD)
        .map(|_| (0..DIM).map(|_| lcg(&mut seed)).collect())
        .collect();
    let ys: Vec<f32> = xs
        .iter()
        .map(|x| x.iter().zip(&truth).map(|(a, b)| a * b).sum::<f32>() + 0.01 * lcg(&mut seed))
        .collect();

    // Rank 0's initial weights win, as with broadcast_parameters in Horovod.
    let mut seed = 7 + rank as u64;
    let w0: Vec<f32> = (0..DIM).map(|_| lcg(&mut seed)).collect();
    let mut w = hora::broadcast("init.w", w0, 0)?;
    // The averaged gradient is as good as one over the whole data set, so one step size fits
    // every job size.
    let lr = 0.5f32;
    let mut last = f32::INFINITY;
    for epoch in 0..10 {
        let mut grad = vec![0f32; DIM];
        let mut loss = 0f32;
        for (x, y) in xs.iter().zip(&ys) {
            let err = x.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>() - y;
            loss += err * err;
            for (g, xi) in grad.iter_mut().zip(x) {
                *g += 2.0 * err * xi / SHARD as f32;
            }
        }
        let grad = hora::allreduce("grad", grad, ReduceOp::Average)?;
        for (wi, g) in w.iter_mut().zip(&grad) {
            *wi -= lr * g;
        }
        let loss = hora::allreduce("loss", vec![loss / SHARD as f32], ReduceOp::Average)?[0];
        // Every rank must hold the same weights.
        let all = hora::allgather("check.w", w.clone())?;
        let same = all.chunks(DIM).all(|c| c == w.as_slice());
        if rank == 0 {
            println!("epoch {epoch}: loss {loss:.5} ({size} ranks in sync: {same})");
        }
        if !same || loss > last {
            eprintln!("rank {rank}: training diverged or ranks out of sync");
            std::process::exit(1);
        }
        last = loss;
    }
    hora::shutdown();
    Ok(())
}
