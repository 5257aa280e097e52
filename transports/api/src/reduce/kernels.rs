//! Native-type kernels: one monomorphised loop per (type, op), with an aligned fast path and a
//! staged fallback for buffers that do not start on an element boundary.

use bytemuck::Pod;

use crate::types::ReduceOp;

/// Elements staged per block on the misaligned path: small enough to live on the stack and in
/// L1, large enough that the per-block `memcpy` calls are amortised.
const BLOCK: usize = 256;

/// Integer ops: wrapping sum and product, plain min and max.
pub(super) trait Int: Pod + Ord {
    fn wrapping_add(self, other: Self) -> Self;
    fn wrapping_mul(self, other: Self) -> Self;
}

macro_rules! impl_int {
    ($($t:ty),*) => {$(
        impl Int for $t {
            #[inline(always)]
            fn wrapping_add(self, other: Self) -> Self {
                <$t>::wrapping_add(self, other)
            }
            #[inline(always)]
            fn wrapping_mul(self, other: Self) -> Self {
                <$t>::wrapping_mul(self, other)
            }
        }
    )*};
}
impl_int!(u8, i8, i16, u16, i32, i64);

/// Float ops, written as selects so the loops vectorise and NaN propagates.
pub(super) trait Float:
    Pod + PartialOrd + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self>
{
    /// True for NaN (`x != x`), without needing a trait from `num`.
    #[inline(always)]
    fn nan(self) -> bool {
        #[allow(clippy::eq_op)]
        let n = self != self;
        n
    }
}
impl Float for f32 {}
impl Float for f64 {}

/// Minimum that returns NaN when either side is NaN (unlike `f32::min`, which ignores NaN).
#[inline(always)]
pub(super) fn nan_min<T: Float>(a: T, b: T) -> T {
    // `b < a` is false when a is NaN, so `a` (NaN) is kept; a NaN `b` is returned explicitly.
    let m = if b < a { b } else { a };
    if b.nan() { b } else { m }
}

/// Maximum that returns NaN when either side is NaN.
#[inline(always)]
pub(super) fn nan_max<T: Float>(a: T, b: T) -> T {
    let m = if b > a { b } else { a };
    if b.nan() { b } else { m }
}

pub(super) fn reduce_int<T: Int>(dst: &mut [u8], src: &[u8], op: ReduceOp) {
    match op {
        // Adasum never gets here: `reduce_into` refuses it first.
        ReduceOp::Sum | ReduceOp::Average | ReduceOp::Adasum => {
            zip_with::<T>(dst, src, T::wrapping_add)
        }
        ReduceOp::Product => zip_with::<T>(dst, src, T::wrapping_mul),
        ReduceOp::Min => zip_with::<T>(dst, src, Ord::min),
        ReduceOp::Max => zip_with::<T>(dst, src, Ord::max),
    }
}

/// Booleans as bytes: any non-zero byte is true and results are 0 or 1, so a caller's
/// non-canonical `true` (e.g. 0xff from C) still combines correctly.
pub(super) fn reduce_bool(dst: &mut [u8], src: &[u8], op: ReduceOp) {
    match op {
        ReduceOp::Sum | ReduceOp::Average | ReduceOp::Adasum | ReduceOp::Max => {
            combine(dst, src, |a, b| u8::from(a != 0 || b != 0))
        }
        ReduceOp::Product | ReduceOp::Min => combine(dst, src, |a, b| u8::from(a != 0 && b != 0)),
    }
}

pub(super) fn reduce_float<T: Float>(dst: &mut [u8], src: &[u8], op: ReduceOp) {
    match op {
        // Adasum never gets here: `reduce_into` refuses it first.
        ReduceOp::Sum | ReduceOp::Average | ReduceOp::Adasum => {
            zip_with::<T>(dst, src, |a, b| a + b)
        }
        ReduceOp::Product => zip_with::<T>(dst, src, |a, b| a * b),
        ReduceOp::Min => zip_with::<T>(dst, src, nan_min),
        ReduceOp::Max => zip_with::<T>(dst, src, nan_max),
    }
}

/// The inner loop. `#[inline(always)]` so that each caller gets its own copy specialised for
/// its closure, which is what lets LLVM vectorise it.
#[inline(always)]
pub(super) fn combine<T: Copy>(dst: &mut [T], src: &[T], f: impl Fn(T, T) -> T) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f(*d, *s);
    }
}

/// `dst[i] = f(dst[i], src[i])` over byte buffers of equal length, a multiple of `size_of::<T>()`.
///
/// A buffer's elements are either all aligned or all misaligned (they are `size_of::<T>()`
/// apart), so alignment is decided once per buffer: an aligned buffer is used in place and a
/// misaligned one is staged through an aligned stack block. The copies run at `memcpy` speed and
/// the combine loop is the same vectorised one either way.
#[inline(always)]
pub(super) fn zip_with<T: Pod>(dst: &mut [u8], src: &[u8], f: impl Fn(T, T) -> T + Copy) {
    let step = BLOCK * size_of::<T>();
    let src_aligned = bytemuck::try_cast_slice::<u8, T>(src).is_ok();
    match (bytemuck::try_cast_slice_mut::<u8, T>(dst), src_aligned) {
        (Ok(d), true) => combine(d, bytemuck::cast_slice(src), f),
        (Ok(d), false) => {
            let mut sb = [T::zeroed(); BLOCK];
            for (dc, sc) in d.chunks_mut(BLOCK).zip(src.chunks(step)) {
                let n = dc.len();
                bytemuck::cast_slice_mut::<T, u8>(&mut sb[..n]).copy_from_slice(sc);
                combine(dc, &sb[..n], f);
            }
        }
        (Err(_), _) => {
            let mut db = [T::zeroed(); BLOCK];
            let mut sb = [T::zeroed(); BLOCK];
            for (dc, sc) in dst.chunks_mut(step).zip(src.chunks(step)) {
                let n = dc.len() / size_of::<T>();
                bytemuck::cast_slice_mut::<T, u8>(&mut db[..n]).copy_from_slice(dc);
                let s: &[T] = match bytemuck::try_cast_slice(sc) {
                    Ok(s) => s,
                    Err(_) => {
                        bytemuck::cast_slice_mut::<T, u8>(&mut sb[..n]).copy_from_slice(sc);
                        &sb[..n]
                    }
                };
                combine(&mut db[..n], s, f);
                dc.copy_from_slice(bytemuck::cast_slice(&db[..n]));
            }
        }
    }
}

/// `buf[i] = f(buf[i])` for every whole element of `buf`.
#[inline(always)]
pub(super) fn map<T: Pod>(buf: &mut [u8], f: impl Fn(T) -> T + Copy) {
    let whole = buf.len() - buf.len() % size_of::<T>();
    let buf = &mut buf[..whole];
    if let Ok(b) = bytemuck::try_cast_slice_mut::<u8, T>(buf) {
        b.iter_mut().for_each(|x| *x = f(*x));
        return;
    }
    let step = BLOCK * size_of::<T>();
    let mut block = [T::zeroed(); BLOCK];
    for c in buf.chunks_mut(step) {
        let n = c.len() / size_of::<T>();
        bytemuck::cast_slice_mut::<T, u8>(&mut block[..n]).copy_from_slice(c);
        block[..n].iter_mut().for_each(|x| *x = f(*x));
        c.copy_from_slice(bytemuck::cast_slice(&block[..n]));
    }
}

/// Writes `value` into every whole element of `buf`.
pub(super) fn fill<T: Pod>(buf: &mut [u8], value: T) {
    let whole = buf.len() - buf.len() % size_of::<T>();
    let buf = &mut buf[..whole];
    if let Ok(b) = bytemuck::try_cast_slice_mut::<u8, T>(buf) {
        b.fill(value);
        return;
    }
    let bytes = bytemuck::bytes_of(&value);
    for c in buf.chunks_exact_mut(size_of::<T>()) {
        c.copy_from_slice(bytes);
    }
}
