//! The sequential reference of the distributed recursion: plain loops over whole vectors,
//! written apart from the kernels so that a mistake in one does not hide in both.

use ::half::{bf16, f16};
use hora_transport::CollectiveError;

use crate::types::DataType;

/// Adasum of every rank's input computed in one place, in the order the distributed
/// algorithm combines them: with `p` the largest power of two ≤ `inputs.len()`, first
/// `x[r] ⊕ x[r + p]` for `r < len - p`, then the balanced binary tree over the `p` results in
/// rank order (`(x0 ⊕ x1) ⊕ (x2 ⊕ x3)`, ...). Each buffer holds consecutive tensors of
/// `counts` elements of `dtype` (a float type), each combined on its own; dot products and
/// norms are accumulated in f64 and each combination is rounded to `dtype` once, as the
/// distributed algorithm does at each level.
pub fn adasum_reference(
    inputs: &[Vec<u8>],
    dtype: DataType,
    counts: &[usize],
) -> Result<Vec<u8>, CollectiveError> {
    let get: fn(&[u8]) -> f64 = match dtype {
        DataType::F32 => |b| f64::from(f32::from_le_bytes(b.try_into().expect("4 bytes"))),
        DataType::F64 => |b| f64::from_le_bytes(b.try_into().expect("8 bytes")),
        DataType::F16 => |b| f16::from_le_bytes(b.try_into().expect("2 bytes")).to_f64(),
        DataType::Bf16 => |b| bf16::from_le_bytes(b.try_into().expect("2 bytes")).to_f64(),
        _ => {
            return Err(CollectiveError::invalid(format_args!(
                "the Adasum reduction needs a float tensor, not {dtype}"
            )));
        }
    };
    let round: fn(f64) -> f64 = match dtype {
        DataType::F32 => |v| f64::from(v as f32),
        DataType::F16 => |v| f16::from_f64(v).to_f64(),
        DataType::Bf16 => |v| bf16::from_f64(v).to_f64(),
        _ => |v| v,
    };
    let es = dtype.size();
    let n: usize = counts.iter().sum();
    if inputs.is_empty() || inputs.iter().any(|x| x.len() != n * es) {
        return Err(CollectiveError::invalid(format_args!(
            "every rank's input must be {} bytes ({n} {dtype} elements)",
            n * es
        )));
    }
    let mut vs: Vec<Vec<f64>> = inputs
        .iter()
        .map(|x| x.chunks_exact(es).map(get).collect())
        .collect();
    let pair = |a: &[f64], b: &[f64]| -> Vec<f64> {
        let mut out = Vec::with_capacity(a.len());
        let mut at = 0;
        for &c in counts {
            let (x, y) = (&a[at..at + c], &b[at..at + c]);
            let dot: f64 = x.iter().zip(y).map(|(u, v)| u * v).sum();
            let xx: f64 = x.iter().map(|u| u * u).sum();
            let yy: f64 = y.iter().map(|v| v * v).sum();
            let tiny = f64::MIN_POSITIVE.sqrt();
            let cx = if xx >= tiny {
                1.0 - dot / (2.0 * xx)
            } else {
                1.0
            };
            let cy = if yy >= tiny {
                1.0 - dot / (2.0 * yy)
            } else {
                1.0
            };
            out.extend(x.iter().zip(y).map(|(u, v)| round(cx * u + cy * v)));
            at += c;
        }
        out
    };
    let p = 1usize << (usize::BITS - 1 - vs.len().leading_zeros());
    for r in 0..vs.len() - p {
        vs[r] = pair(&vs[r], &vs[r + p]);
    }
    vs.truncate(p);
    while vs.len() > 1 {
        vs = vs.chunks(2).map(|w| pair(&w[0], &w[1])).collect();
    }
    let put = |v: f64| -> Vec<u8> {
        match dtype {
            DataType::F32 => (v as f32).to_le_bytes().to_vec(),
            DataType::F16 => f16::from_f64(v).to_le_bytes().to_vec(),
            DataType::Bf16 => bf16::from_f64(v).to_le_bytes().to_vec(),
            _ => v.to_le_bytes().to_vec(),
        }
    };
    Ok(vs[0].iter().flat_map(|&v| put(v)).collect())
}
