//! Element-wise reductions over raw byte buffers: the arithmetic behind allreduce and
//! reducescatter, plus the scaling and identity fills the engine needs around them.
//!
//! Buffers arrive as bytes because they come from fusion buffers and foreign memory (Python,
//! C); they may start at any address. Each kernel takes a fast path when both buffers are
//! aligned for the element type (a `bytemuck` cast, then a plain loop the compiler
//! vectorises) and otherwise stages blocks through aligned stack arrays, which costs a cheap
//! `memcpy` but keeps the inner loop identical.
//!
//! Semantics shared by every dtype:
//! - integers wrap on overflow (sum and product), never panic;
//! - float min/max propagate NaN (if either side is NaN, the result is NaN);
//! - bool (one byte, non-zero is true) is logical: Sum and Max are OR, Product and Min AND,
//!   results are 0 or 1; [`scale`] leaves a bool buffer alone (the engine refuses factors);
//! - f16 and bf16 are widened to f32, combined, and rounded back (to nearest even) once;
//! - [`ReduceOp::Average`] is combined as a sum: the caller divides by the rank count with
//!   [`scale`], as Horovod's postscale does;
//! - [`ReduceOp::Adasum`] is not element-wise and is refused ([`ReduceError::NotElementwise`]):
//!   its algorithm lives with the collectives.

mod half;
mod kernels;

#[cfg(test)]
mod tests;

use crate::types::{DataType, ReduceOp};

/// Why a reduction was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReduceError {
    /// The two buffers do not hold the same number of bytes.
    #[error("reduce buffers differ in length: destination {dst} bytes, source {src} bytes")]
    LengthMismatch {
        /// Destination length in bytes.
        dst: usize,
        /// Source length in bytes.
        src: usize,
    },
    /// The op is not element-wise (Adasum), so no kernel here computes it.
    #[error("{op} is not an element-wise reduction")]
    NotElementwise {
        /// The op asked for.
        op: ReduceOp,
    },
    /// The buffer length is not a whole number of elements.
    #[error("a buffer of {len} bytes is not a whole number of {dtype} elements")]
    PartialElement {
        /// Buffer length in bytes.
        len: usize,
        /// The element type.
        dtype: DataType,
    },
}

/// `dst[i] = dst[i] (op) src[i]` for every element; `dst` and `src` are raw bytes of equal
/// length, a multiple of `dtype.size()`. `Average` is combined as `Sum`; `Adasum` is refused.
pub fn reduce_into(
    dst: &mut [u8],
    src: &[u8],
    dtype: DataType,
    op: ReduceOp,
) -> Result<(), ReduceError> {
    if !op.is_elementwise() {
        return Err(ReduceError::NotElementwise { op });
    }
    if dst.len() != src.len() {
        return Err(ReduceError::LengthMismatch {
            dst: dst.len(),
            src: src.len(),
        });
    }
    if !dst.len().is_multiple_of(dtype.size()) {
        return Err(ReduceError::PartialElement {
            len: dst.len(),
            dtype,
        });
    }
    match dtype {
        DataType::U8 => kernels::reduce_int::<u8>(dst, src, op),
        DataType::I8 => kernels::reduce_int::<i8>(dst, src, op),
        DataType::I16 => kernels::reduce_int::<i16>(dst, src, op),
        DataType::U16 => kernels::reduce_int::<u16>(dst, src, op),
        DataType::Bool => kernels::reduce_bool(dst, src, op),
        DataType::I32 => kernels::reduce_int::<i32>(dst, src, op),
        DataType::I64 => kernels::reduce_int::<i64>(dst, src, op),
        DataType::F32 => kernels::reduce_float::<f32>(dst, src, op),
        DataType::F64 => kernels::reduce_float::<f64>(dst, src, op),
        DataType::F16 => half::reduce_f16(dst, src, op),
        DataType::Bf16 => half::reduce_bf16(dst, src, op),
    }
    Ok(())
}

/// `buf[i] *= factor` for every whole element of `buf` (a trailing partial element is left
/// alone). Integers are computed in f64 and rounded toward zero (saturating at the type's
/// bounds); f32 is computed in f64 and rounded once; f16/bf16 are computed in f32.
pub fn scale(buf: &mut [u8], dtype: DataType, factor: f64) {
    // Scaling by one is common (prescale/postscale default) and must be exact for i64.
    if factor == 1.0 {
        return;
    }
    match dtype {
        DataType::U8 => kernels::map::<u8>(buf, |x| (f64::from(x) * factor) as u8),
        DataType::I8 => kernels::map::<i8>(buf, |x| (f64::from(x) * factor) as i8),
        DataType::I16 => kernels::map::<i16>(buf, |x| (f64::from(x) * factor) as i16),
        DataType::U16 => kernels::map::<u16>(buf, |x| (f64::from(x) * factor) as u16),
        // Scaling a truth value has no meaning; the engine refuses factors on bool tensors.
        DataType::Bool => {}
        DataType::I32 => kernels::map::<i32>(buf, |x| (f64::from(x) * factor) as i32),
        DataType::I64 => kernels::map::<i64>(buf, |x| (x as f64 * factor) as i64),
        DataType::F32 => kernels::map::<f32>(buf, |x| (f64::from(x) * factor) as f32),
        DataType::F64 => kernels::map::<f64>(buf, |x| x * factor),
        DataType::F16 => half::scale_f16(buf, factor as f32),
        DataType::Bf16 => half::scale_bf16(buf, factor as f32),
    }
}

/// Fills every whole element of `buf` with `op`'s identity: 0 for Sum/Average/Adasum (a zero
/// vector leaves Adasum's pairwise combination unchanged), 1 for
/// Product, the largest value (+inf for floats) for Min and the smallest (-inf) for Max
/// (for bool: true for Product and Min, false for Sum and Max).
pub fn fill_identity(buf: &mut [u8], dtype: DataType, op: ReduceOp) {
    use ::half::{bf16, f16};
    use ReduceOp::{Average, Max, Min, Product, Sum};
    match (dtype, op) {
        (_, Sum | Average | ReduceOp::Adasum) => {
            // Zero is all-zero bytes for every supported type.
            let whole = buf.len() - buf.len() % dtype.size();
            buf[..whole].fill(0);
        }
        (DataType::U8, Product) => kernels::fill(buf, 1u8),
        (DataType::U8, Min) => kernels::fill(buf, u8::MAX),
        (DataType::U8, Max) => kernels::fill(buf, u8::MIN),
        (DataType::I8, Product) => kernels::fill(buf, 1i8),
        (DataType::I8, Min) => kernels::fill(buf, i8::MAX),
        (DataType::I8, Max) => kernels::fill(buf, i8::MIN),
        (DataType::I16, Product) => kernels::fill(buf, 1i16),
        (DataType::I16, Min) => kernels::fill(buf, i16::MAX),
        (DataType::I16, Max) => kernels::fill(buf, i16::MIN),
        (DataType::U16, Product) => kernels::fill(buf, 1u16),
        (DataType::U16, Min) => kernels::fill(buf, u16::MAX),
        (DataType::U16, Max) => kernels::fill(buf, u16::MIN),
        // true is the identity of AND (Product, Min); false, the zero above, that of OR.
        (DataType::Bool, Product | Min) => buf.fill(1),
        (DataType::Bool, Max) => buf.fill(0),
        (DataType::I32, Product) => kernels::fill(buf, 1i32),
        (DataType::I32, Min) => kernels::fill(buf, i32::MAX),
        (DataType::I32, Max) => kernels::fill(buf, i32::MIN),
        (DataType::I64, Product) => kernels::fill(buf, 1i64),
        (DataType::I64, Min) => kernels::fill(buf, i64::MAX),
        (DataType::I64, Max) => kernels::fill(buf, i64::MIN),
        (DataType::F32, Product) => kernels::fill(buf, 1f32),
        (DataType::F32, Min) => kernels::fill(buf, f32::INFINITY),
        (DataType::F32, Max) => kernels::fill(buf, f32::NEG_INFINITY),
        (DataType::F64, Product) => kernels::fill(buf, 1f64),
        (DataType::F64, Min) => kernels::fill(buf, f64::INFINITY),
        (DataType::F64, Max) => kernels::fill(buf, f64::NEG_INFINITY),
        (DataType::F16, Product) => kernels::fill(buf, f16::ONE),
        (DataType::F16, Min) => kernels::fill(buf, f16::INFINITY),
        (DataType::F16, Max) => kernels::fill(buf, f16::NEG_INFINITY),
        (DataType::Bf16, Product) => kernels::fill(buf, bf16::ONE),
        (DataType::Bf16, Min) => kernels::fill(buf, bf16::INFINITY),
        (DataType::Bf16, Max) => kernels::fill(buf, bf16::NEG_INFINITY),
    }
}
