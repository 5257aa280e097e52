//! Adasum through the whole engine: every float dtype and several sizes against the
//! sequential reference, tensors in flight together (never fused, each its own vector), a rank
//! that joined early (its zero vector leaves the others' result unchanged), and integer
//! tensors refused with the tensor's name.

use hora::api;
use hora::collectives::adasum_reference;
use hora::collectives::conformance::adasum::{FLOATS, close, decode, encode, values};
use hora::{DataType, Element, Error, ReduceOp};

use super::fail;

fn e(err: Error) -> String {
    err.to_string()
}

/// This rank's [`values`] as a `Vec<T>` (through the dtype's bytes, so rounding is the
/// reference's).
fn typed<T: Element + Copy>(dtype: DataType, v: &[f64], from: fn(&[u8]) -> T) -> Vec<T> {
    encode(dtype, v)
        .chunks_exact(dtype.size())
        .map(from)
        .collect()
}

/// Starts an Adasum allreduce of `vals` as `dtype`; waiting gives the result widened to f64.
fn start(dtype: DataType, name: &str, vals: &[f64]) -> Result<Pending, String> {
    let h = match dtype {
        DataType::F32 => api::allreduce_async(
            name,
            typed(dtype, vals, |b| f32::from_le_bytes(b.try_into().unwrap())),
            ReduceOp::Adasum,
        ),
        DataType::F64 => api::allreduce_async(
            name,
            typed(dtype, vals, |b| f64::from_le_bytes(b.try_into().unwrap())),
            ReduceOp::Adasum,
        ),
        DataType::F16 => api::allreduce_async(
            name,
            typed(dtype, vals, |b| {
                half::f16::from_le_bytes(b.try_into().unwrap())
            }),
            ReduceOp::Adasum,
        ),
        _ => api::allreduce_async(
            name,
            typed(dtype, vals, |b| {
                half::bf16::from_le_bytes(b.try_into().unwrap())
            }),
            ReduceOp::Adasum,
        ),
    }
    .map_err(e)?;
    Ok(Pending { h, dtype })
}

struct Pending {
    h: hora::Handle,
    dtype: DataType,
}

impl Pending {
    fn wait(self) -> Result<Vec<f64>, String> {
        let mut c = self.h.wait().map_err(e)?;
        let bytes: Vec<u8> = match self.dtype {
            DataType::F32 => take::<f32>(&mut c)?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            DataType::F64 => take::<f64>(&mut c)?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            DataType::F16 => take::<half::f16>(&mut c)?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            _ => take::<half::bf16>(&mut c)?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        };
        Ok(decode(self.dtype, &bytes))
    }
}

fn take<T: 'static>(c: &mut hora::Completion) -> Result<Vec<T>, String> {
    c.take_data::<Vec<T>>()
        .ok_or_else(|| "the completion holds no tensor".to_string())
}

/// The reference over `np` ranks' [`values`] (`absent` ranks contribute zeros: they joined).
fn reference(dtype: DataType, np: usize, n: usize, salt: usize, absent: &[usize]) -> Vec<f64> {
    let inputs: Vec<Vec<u8>> = (0..np)
        .map(|r| {
            let v = if absent.contains(&r) {
                vec![0.0; n]
            } else {
                values(r, n, salt)
            };
            encode(dtype, &v)
        })
        .collect();
    decode(
        dtype,
        &adasum_reference(&inputs, dtype, &[n]).expect("reference"),
    )
}

pub(super) fn adasum() -> Result<(), String> {
    let rank = api::rank().map_err(e)?;
    let np = api::size().map_err(e)?;
    for dtype in FLOATS {
        for (salt, n) in [1usize, 2, 1001, 300_007].into_iter().enumerate() {
            let name = format!("adasum.{dtype}.{n}");
            let got = start(dtype, &name, &values(rank, n, salt))?.wait()?;
            close(dtype, np, &[n], &got, &reference(dtype, np, n, salt, &[]))
                .map_err(|m| format!("{name}: {m}"))?;
        }
        // Several at once: each is combined as its own vector.
        let sizes = [5usize, 64, 3000];
        let pending: Vec<Pending> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                start(
                    dtype,
                    &format!("adasum.many.{dtype}.{i}"),
                    &values(rank, n, 50 + i),
                )
            })
            .collect::<Result<_, _>>()?;
        for (i, (p, &n)) in pending.into_iter().zip(&sizes).enumerate() {
            let got = p.wait()?;
            close(dtype, np, &[n], &got, &reference(dtype, np, n, 50 + i, &[]))
                .map_err(|m| format!("adasum.many.{dtype}.{i}: {m}"))?;
        }
    }
    match api::allreduce("adasum.int", vec![1i32; 4], ReduceOp::Adasum) {
        Ok(v) => return fail(format!("Adasum of i32 succeeded with {v:?}")),
        Err(err) => {
            let m = err.to_string();
            if !(m.contains("adasum.int") && m.contains("float")) {
                return fail(format!(
                    "the i32 refusal does not name the tensor and why: {m}"
                ));
            }
        }
    }
    // The last rank joins first; the others' Adasum treats it as a zero vector.
    if np > 1 {
        let last = np - 1;
        if rank != last {
            let got = start(DataType::F32, "adasum.joined", &values(rank, 777, 99))?.wait()?;
            let want = reference(DataType::F32, np, 777, 99, &[last]);
            close(DataType::F32, np, &[777], &got, &want)
                .map_err(|m| format!("adasum.joined: {m}"))?;
        }
        api::join().map_err(e)?;
    }
    Ok(())
}
