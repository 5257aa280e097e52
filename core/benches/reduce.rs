//! Reduction kernel throughput (bytes of destination per second) per dtype and op.
//!
//! Quick run: `cargo bench -p hora --bench reduce -- --warm-up-time 1 --measurement-time 2`.

#![forbid(unsafe_code)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hora::reduce::reduce_into;
use hora::{DataType, ReduceOp};

fn kernels(c: &mut Criterion) {
    let mut group = c.benchmark_group("reduce_into");
    for elems in [1usize << 20, 16 << 20] {
        for dtype in DataType::ALL {
            // Products and large sizes for every type would take minutes; keep the matrix to
            // what tells us something: every type for sum, f32/f16 for the other ops.
            let ops: &[ReduceOp] = if matches!(dtype, DataType::F32 | DataType::F16) {
                &[
                    ReduceOp::Sum,
                    ReduceOp::Min,
                    ReduceOp::Max,
                    ReduceOp::Product,
                ]
            } else {
                &[ReduceOp::Sum]
            };
            let len = elems * dtype.size();
            // Small integer bit patterns (1) keep floats finite across iterations.
            let src = match dtype {
                DataType::F16 => [0x00u8, 0x3c].repeat(elems),
                DataType::Bf16 => [0x80u8, 0x3f].repeat(elems),
                _ => vec![0u8; len],
            };
            let mut dst = src.clone();
            for &op in ops {
                group.throughput(Throughput::Bytes(len as u64));
                let id = BenchmarkId::new(format!("{dtype}/{op}"), format!("{}Mi", elems >> 20));
                group.bench_function(id, |b| {
                    b.iter(|| reduce_into(black_box(&mut dst), black_box(&src), dtype, op).unwrap())
                });
            }
        }
    }
    // The misaligned path (Python memory, fusion-buffer offsets) for the two headline types.
    for dtype in [DataType::F32, DataType::F16] {
        let len = (1usize << 20) * dtype.size();
        let src = vec![0u8; len + 1];
        let mut dst = vec![0u8; len + 1];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(
            BenchmarkId::new(format!("{dtype}/sum/misaligned"), "1Mi"),
            |b| {
                b.iter(|| {
                    reduce_into(
                        black_box(&mut dst[1..]),
                        black_box(&src[1..]),
                        dtype,
                        ReduceOp::Sum,
                    )
                    .unwrap()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
