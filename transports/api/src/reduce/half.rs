//! f16 and bf16: each element is widened to f32, combined in f32, and rounded back once (round
//! to nearest, ties to even), so results equal converting element by element with `half`.
//!
//! The two formats take different routes, each the faster one measured here:
//! - **f16** goes through `half`'s slice conversions a 256-element block at a time, staged on
//!   the stack. Those use the F16C instructions when the CPU has them (detected at run time,
//!   or inlined outright when the build enables `f16c`, which roughly triples throughput).
//!   Branch-free bit manipulation in plain Rust vectorises too but was slower with baseline SSE2.
//! - **bf16** is the top half of an f32, so widening is a shift and rounding an add; written
//!   inline here, the element loop vectorises. (`half` has no SIMD path for bf16 and was a third
//!   as fast.)

use ::half::f16;
use ::half::slice::HalfFloatSliceExt;

use super::kernels::{combine, map, nan_max, nan_min, zip_with};
use crate::types::ReduceOp;

/// f16 elements staged per block: 512 bytes of f16 and 1 KiB of f32 per operand, in L1.
const BLOCK: usize = 256;

pub(super) fn reduce_f16(dst: &mut [u8], src: &[u8], op: ReduceOp) {
    match op {
        // Adasum never gets here: `reduce_into` refuses it first.
        ReduceOp::Sum | ReduceOp::Average | ReduceOp::Adasum => f16_blocks(dst, src, |a, b| a + b),
        ReduceOp::Product => f16_blocks(dst, src, |a, b| a * b),
        ReduceOp::Min => f16_blocks(dst, src, nan_min),
        ReduceOp::Max => f16_blocks(dst, src, nan_max),
    }
}

/// Copies up to one block of raw bytes into an aligned stack array (any source alignment).
#[inline(always)]
fn load(bytes: &[u8], block: &mut [f16; BLOCK]) -> usize {
    let n = bytes.len() / 2;
    bytemuck::cast_slice_mut::<f16, u8>(&mut block[..n]).copy_from_slice(bytes);
    n
}

#[inline(always)]
fn f16_blocks(dst: &mut [u8], src: &[u8], f: impl Fn(f32, f32) -> f32 + Copy) {
    let mut dh = [f16::ZERO; BLOCK];
    let mut sh = [f16::ZERO; BLOCK];
    let mut df = [0f32; BLOCK];
    let mut sf = [0f32; BLOCK];
    for (dc, sc) in dst.chunks_mut(2 * BLOCK).zip(src.chunks(2 * BLOCK)) {
        // Staging even aligned blocks keeps one code path; the 512-byte copies cost little
        // next to the conversions.
        let n = load(dc, &mut dh);
        load(sc, &mut sh);
        dh[..n].convert_to_f32_slice(&mut df[..n]);
        sh[..n].convert_to_f32_slice(&mut sf[..n]);
        combine(&mut df[..n], &sf[..n], f);
        dh[..n].convert_from_f32_slice(&df[..n]);
        dc.copy_from_slice(bytemuck::cast_slice(&dh[..n]));
    }
}

/// `buf[i] *= factor` for f16, computed in f32, for every whole element.
pub(super) fn scale_f16(buf: &mut [u8], factor: f32) {
    let whole = buf.len() - buf.len() % 2;
    let mut h = [f16::ZERO; BLOCK];
    let mut f = [0f32; BLOCK];
    for c in buf[..whole].chunks_mut(2 * BLOCK) {
        let n = load(c, &mut h);
        h[..n].convert_to_f32_slice(&mut f[..n]);
        f[..n].iter_mut().for_each(|x| *x *= factor);
        h[..n].convert_from_f32_slice(&f[..n]);
        c.copy_from_slice(bytemuck::cast_slice(&h[..n]));
    }
}

/// Exact widening of bf16 bits to f32.
#[inline(always)]
pub(super) fn bf16_widen(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// Rounds an f32 to the nearest bf16 (ties to even); NaN stays NaN.
#[inline(always)]
pub(super) fn bf16_narrow(f: f32) -> u16 {
    let x = f.to_bits();
    // Adding 0x7fff plus the lowest kept bit rounds to nearest even, and carries into the
    // exponent (up to Inf) when it should. NaN is made quiet instead, so it cannot round to Inf.
    let rounded = x.wrapping_add(0x7fff + ((x >> 16) & 1)) >> 16;
    let nan = (x & 0x7fff_ffff) > 0x7f80_0000;
    (if nan { (x >> 16) | 0x0040 } else { rounded }) as u16
}

pub(super) fn reduce_bf16(dst: &mut [u8], src: &[u8], op: ReduceOp) {
    #[inline(always)]
    fn via_f32(f: impl Fn(f32, f32) -> f32 + Copy) -> impl Fn(u16, u16) -> u16 + Copy {
        move |a, b| bf16_narrow(f(bf16_widen(a), bf16_widen(b)))
    }
    match op {
        // Adasum never gets here: `reduce_into` refuses it first.
        ReduceOp::Sum | ReduceOp::Average | ReduceOp::Adasum => {
            zip_with::<u16>(dst, src, via_f32(|a, b| a + b))
        }
        ReduceOp::Product => zip_with::<u16>(dst, src, via_f32(|a, b| a * b)),
        ReduceOp::Min => zip_with::<u16>(dst, src, via_f32(nan_min)),
        ReduceOp::Max => zip_with::<u16>(dst, src, via_f32(nan_max)),
    }
}

/// `buf[i] *= factor` for bf16, computed in f32, for every whole element.
pub(super) fn scale_bf16(buf: &mut [u8], factor: f32) {
    map::<u16>(buf, |x| bf16_narrow(bf16_widen(x) * factor));
}
