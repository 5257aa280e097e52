//! The Adasum check: every float dtype and a few sizes against the sequential reference
//! ([`adasum_reference`]), within a few roundings (the distributed dot products add in another
//! order), and bit-identical on every rank. Also the inputs and comparison the unit tests use.

use ::half::{bf16, f16};

use super::{Collectives, Seq, call_err, deadline, mix};
use crate::collectives::adasum_reference;
use crate::types::{DataType, ReduceOp};

/// The float dtypes, the ones Adasum takes.
pub const FLOATS: [DataType; 4] = [DataType::F32, DataType::F64, DataType::F16, DataType::Bf16];

/// A value in [-1, 1) from coordinates.
fn unit(a: usize, b: usize, c: usize) -> f64 {
    (mix(a, b, c) % 2001) as f64 / 1000.0 - 1.0
}

/// Rank `rank`'s vector: a component shared by every rank plus its own noise, so the ranks'
/// vectors are neither parallel nor orthogonal (where Adasum would equal the average or sum).
pub fn values(rank: usize, elems: usize, salt: usize) -> Vec<f64> {
    (0..elems)
        .map(|i| unit(i, salt, 7) + 0.6 * unit(rank, i, salt) + 0.1 * rank as f64)
        .collect()
}

/// `v` rounded to `dtype`, as little-endian bytes.
pub fn encode(dtype: DataType, v: &[f64]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| match dtype {
            DataType::F32 => (x as f32).to_le_bytes().to_vec(),
            DataType::F64 => x.to_le_bytes().to_vec(),
            DataType::F16 => f16::from_f64(x).to_le_bytes().to_vec(),
            DataType::Bf16 => bf16::from_f64(x).to_le_bytes().to_vec(),
            _ => unreachable!("float dtypes only"),
        })
        .collect()
}

/// The elements of `b` (little-endian `dtype`), widened to f64.
pub fn decode(dtype: DataType, b: &[u8]) -> Vec<f64> {
    b.chunks_exact(dtype.size())
        .map(|c| match dtype {
            DataType::F32 => f64::from(f32::from_le_bytes(c.try_into().unwrap())),
            DataType::F64 => f64::from_le_bytes(c.try_into().unwrap()),
            DataType::F16 => f16::from_le_bytes(c.try_into().unwrap()).to_f64(),
            DataType::Bf16 => bf16::from_le_bytes(c.try_into().unwrap()).to_f64(),
            _ => unreachable!("float dtypes only"),
        })
        .collect()
}

/// `Ok` when `got` is within a few roundings of `want` per tensor (the distributed sums of
/// dot products add in another order than the reference's, which can move a rounding).
pub fn close(
    dtype: DataType,
    np: usize,
    counts: &[usize],
    got: &[f64],
    want: &[f64],
) -> Result<(), String> {
    let eps = match dtype {
        DataType::F32 => f64::from(f32::EPSILON),
        DataType::F64 => f64::EPSILON,
        DataType::F16 => f16::EPSILON.to_f64(),
        _ => bf16::EPSILON.to_f64(),
    };
    let levels = (usize::BITS - np.leading_zeros()) as f64 + 1.0;
    let mut at = 0;
    for (t, &c) in counts.iter().enumerate() {
        let (g, w) = (&got[at..at + c], &want[at..at + c]);
        let max = w.iter().fold(0f64, |m, x| m.max(x.abs()));
        // Rounding to the dtype at each level, plus the f64 sums' own error (the reference
        // adds sequentially), which grows with the tensor's length.
        let sums = 4.0 * (c as f64).sqrt() * f64::EPSILON;
        let tol = levels * (2.0 * eps + sums) * max + 1e-300;
        if let Some(i) = (0..c).find(|&i| (g[i] - w[i]).abs() > tol || g[i].is_nan()) {
            return Err(format!(
                "{dtype} np {np} tensor {t} element {i}: {} vs reference {} (tolerance {tol})",
                g[i], w[i]
            ));
        }
        at += c;
    }
    Ok(())
}

/// Adasum of every float dtype at sizes 0, 1, odd, and past 1 MiB, with prescale and
/// postscale applied around it as the engine does, against the reference; every rank must
/// also hold the same bits (checked through an allgather of the results).
pub fn adasum_every_float_dtype(c: &dyn Collectives, seq: &mut Seq) -> Result<(), String> {
    let (me, np) = (c.rank(), c.size());
    for (salt, elems) in [0usize, 1, 3, 1031, (1 << 20) / 4 + 3]
        .into_iter()
        .enumerate()
    {
        for dtype in FLOATS {
            let what = format!("adasum {dtype} of {elems} elements");
            let mut buf = encode(dtype, &values(me, elems, salt));
            crate::reduce::scale(&mut buf, dtype, 0.5);
            c.allreduce(&mut buf, dtype, ReduceOp::Adasum, seq.take(), deadline())
                .map_err(|e| call_err(&what, e))?;
            crate::reduce::scale(&mut buf, dtype, 2.0);
            let inputs: Vec<Vec<u8>> = (0..np)
                .map(|r| {
                    let mut x = encode(dtype, &values(r, elems, salt));
                    crate::reduce::scale(&mut x, dtype, 0.5);
                    x
                })
                .collect();
            let mut want = adasum_reference(&inputs, dtype, &[elems]).map_err(|e| e.to_string())?;
            crate::reduce::scale(&mut want, dtype, 2.0);
            close(
                dtype,
                np,
                &[elems],
                &decode(dtype, &buf),
                &decode(dtype, &want),
            )
            .map_err(|e| format!("{what}: {e}"))?;
            let mut all = vec![0u8; buf.len() * np];
            c.allgatherv(&buf, &mut all, &vec![buf.len(); np], seq.take(), deadline())
                .map_err(|e| call_err(&what, e))?;
            if let Some(r) = (0..np).find(|r| all[r * buf.len()..(r + 1) * buf.len()] != buf[..]) {
                return Err(format!("{what}: rank {r} holds other bits than rank {me}"));
            }
        }
    }
    Ok(())
}
