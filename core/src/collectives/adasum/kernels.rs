//! The arithmetic of Adasum's pairwise combination over raw little-endian bytes: dot product
//! and squared norms accumulated in f64, and the scaled add `a = ca·a + cb·b`.
//!
//! Every dtype is widened to f64 (f16 and bf16 exactly, through f32), so half-precision
//! vectors get the same accumulation as f64 ones, and each result element is rounded to its
//! dtype once. Buffers may start at any address: aligned ones are cast to their element type
//! (the loops the compiler vectorises); others are read with `from_le_bytes` per element.

use ::half::{bf16, f16};

use crate::types::DataType;

/// Partial sums of one piece of a pair of vectors: `[a·b, |a|², |b|²]`.
pub(super) type DotNorms = [f64; 3];

/// The two kernels for one dtype.
#[derive(Clone, Copy)]
pub(super) struct Kernels {
    /// Element size in bytes.
    pub(super) size: usize,
    /// `[a·b, |a|², |b|²]` of two equal-length byte buffers.
    pub(super) dot_norms: fn(&[u8], &[u8]) -> DotNorms,
    /// `a[i] = ca·a[i] + cb·b[i]`, computed in f64 and rounded once.
    pub(super) scaled_add: fn(&mut [u8], f64, &[u8], f64),
}

/// The kernels of a float `dtype`; `None` for integer types, which Adasum does not take.
pub(super) fn for_dtype(dtype: DataType) -> Option<Kernels> {
    fn of<E: Elem>() -> Kernels {
        Kernels {
            size: E::SIZE,
            dot_norms: dot_norms::<E>,
            scaled_add: scaled_add::<E>,
        }
    }
    match dtype {
        DataType::F32 => Some(of::<f32>()),
        DataType::F64 => Some(of::<f64>()),
        DataType::F16 => Some(of::<f16>()),
        DataType::Bf16 => Some(of::<bf16>()),
        DataType::U8
        | DataType::I8
        | DataType::I16
        | DataType::U16
        | DataType::I32
        | DataType::I64
        | DataType::Bool => None,
    }
}

/// A float element as stored in a buffer.
trait Elem: bytemuck::Pod {
    const SIZE: usize;
    /// The value widened to f64 (exact).
    fn wide(self) -> f64;
    /// `v` rounded to this type.
    fn narrow(v: f64) -> Self;
    /// Reads the element at the start of `b` (at least `SIZE` bytes).
    fn get(b: &[u8]) -> f64;
    /// Rounds `v` to this type and writes it at the start of `b`.
    fn put(v: f64, b: &mut [u8]);
}

impl Elem for f32 {
    const SIZE: usize = 4;
    #[inline(always)]
    fn wide(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn narrow(v: f64) -> Self {
        v as Self
    }
    #[inline(always)]
    fn get(b: &[u8]) -> f64 {
        f64::from(Self::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    #[inline(always)]
    fn put(v: f64, b: &mut [u8]) {
        b[..4].copy_from_slice(&(v as Self).to_le_bytes());
    }
}

impl Elem for f64 {
    const SIZE: usize = 8;
    #[inline(always)]
    fn wide(self) -> f64 {
        self
    }
    #[inline(always)]
    fn narrow(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn get(b: &[u8]) -> f64 {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[..8]);
        Self::from_le_bytes(x)
    }
    #[inline(always)]
    fn put(v: f64, b: &mut [u8]) {
        b[..8].copy_from_slice(&v.to_le_bytes());
    }
}

impl Elem for f16 {
    const SIZE: usize = 2;
    #[inline(always)]
    fn wide(self) -> f64 {
        self.to_f64()
    }
    #[inline(always)]
    fn narrow(v: f64) -> Self {
        Self::from_f64(v)
    }
    #[inline(always)]
    fn get(b: &[u8]) -> f64 {
        Self::from_le_bytes([b[0], b[1]]).to_f64()
    }
    #[inline(always)]
    fn put(v: f64, b: &mut [u8]) {
        b[..2].copy_from_slice(&Self::from_f64(v).to_le_bytes());
    }
}

impl Elem for bf16 {
    const SIZE: usize = 2;
    #[inline(always)]
    fn wide(self) -> f64 {
        self.to_f64()
    }
    #[inline(always)]
    fn narrow(v: f64) -> Self {
        Self::from_f64(v)
    }
    #[inline(always)]
    fn get(b: &[u8]) -> f64 {
        Self::from_le_bytes([b[0], b[1]]).to_f64()
    }
    #[inline(always)]
    fn put(v: f64, b: &mut [u8]) {
        b[..2].copy_from_slice(&Self::from_f64(v).to_le_bytes());
    }
}

/// Independent accumulators per sum: without them every add waits for the previous one (f64
/// addition is not reassociated by the compiler), which made the pass latency-bound.
const LANES: usize = 4;

fn dot_norms<E: Elem>(a: &[u8], b: &[u8]) -> DotNorms {
    debug_assert_eq!(a.len(), b.len());
    if let (Ok(x), Ok(y)) = (
        bytemuck::try_cast_slice::<u8, E>(a),
        bytemuck::try_cast_slice::<u8, E>(b),
    ) {
        return dot_norms_typed(x, y);
    }
    let mut dot = [0f64; LANES];
    let mut aa = [0f64; LANES];
    let mut bb = [0f64; LANES];
    let step = LANES * E::SIZE;
    let (mut ca, mut cb) = (a.chunks_exact(step), b.chunks_exact(step));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            let u = E::get(&x[l * E::SIZE..]);
            let v = E::get(&y[l * E::SIZE..]);
            dot[l] += u * v;
            aa[l] += u * u;
            bb[l] += v * v;
        }
    }
    let tail = ca
        .remainder()
        .chunks_exact(E::SIZE)
        .zip(cb.remainder().chunks_exact(E::SIZE));
    for (l, (x, y)) in tail.enumerate() {
        let (u, v) = (E::get(x), E::get(y));
        dot[l] += u * v;
        aa[l] += u * u;
        bb[l] += v * v;
    }
    let total = |s: [f64; LANES]| s.iter().sum::<f64>();
    [total(dot), total(aa), total(bb)]
}

/// [`dot_norms`] over aligned elements: plain indexing the compiler vectorises.
fn dot_norms_typed<E: Elem>(a: &[E], b: &[E]) -> DotNorms {
    let mut dot = [0f64; LANES];
    let mut aa = [0f64; LANES];
    let mut bb = [0f64; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            let (u, v) = (x[l].wide(), y[l].wide());
            dot[l] += u * v;
            aa[l] += u * u;
            bb[l] += v * v;
        }
    }
    for (l, (x, y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        let (u, v) = (x.wide(), y.wide());
        dot[l] += u * v;
        aa[l] += u * u;
        bb[l] += v * v;
    }
    let total = |s: [f64; LANES]| s.iter().sum::<f64>();
    [total(dot), total(aa), total(bb)]
}

fn scaled_add<E: Elem>(a: &mut [u8], ca: f64, b: &[u8], cb: f64) {
    debug_assert_eq!(a.len(), b.len());
    if let (Ok(x), Ok(y)) = (
        bytemuck::try_cast_slice_mut::<u8, E>(a),
        bytemuck::try_cast_slice::<u8, E>(b),
    ) {
        for (x, y) in x.iter_mut().zip(y) {
            *x = E::narrow(ca * x.wide() + cb * y.wide());
        }
        return;
    }
    for (x, y) in a.chunks_exact_mut(E::SIZE).zip(b.chunks_exact(E::SIZE)) {
        let v = ca * E::get(x) + cb * E::get(y);
        E::put(v, x);
    }
}

/// Adasum's coefficients `(c_left, c_right)` for a pair with `[dot, |left|², |right|²]`: a
/// vector whose squared norm is below `sqrt(f64::MIN_POSITIVE)` counts as zero and keeps
/// coefficient 1 (Horovod's threshold), so a zero vector leaves the other unchanged.
pub(super) fn coefficients(s: DotNorms) -> (f64, f64) {
    let [dot, left, right] = s;
    let tiny = f64::MIN_POSITIVE.sqrt();
    let c = |sq: f64| {
        if sq >= tiny {
            1.0 - dot / sq * 0.5
        } else {
            1.0
        }
    };
    (c(left), c(right))
}
