//! Kernels against a per-element reference, on aligned and misaligned buffers.

use ::half::{bf16, f16};

use super::*;

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn nan_min_f64(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn nan_max_f64(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Combines one float pair in f64, the way the kernels' semantics are specified.
fn float_op(op: ReduceOp, a: f64, b: f64) -> f64 {
    match op {
        ReduceOp::Sum | ReduceOp::Average => a + b,
        ReduceOp::Product => a * b,
        ReduceOp::Min => nan_min_f64(a, b),
        ReduceOp::Max => nan_max_f64(a, b),
        ReduceOp::Adasum => unreachable!("not element-wise"),
    }
}

macro_rules! int_ref {
    ($t:ty, $op:expr, $a:expr, $b:expr) => {{
        let a = <$t>::from_le_bytes($a.try_into().unwrap());
        let b = <$t>::from_le_bytes($b.try_into().unwrap());
        let r = match $op {
            ReduceOp::Sum | ReduceOp::Average => a.wrapping_add(b),
            ReduceOp::Product => a.wrapping_mul(b),
            ReduceOp::Min => a.min(b),
            ReduceOp::Max => a.max(b),
            ReduceOp::Adasum => unreachable!("not element-wise"),
        };
        r.to_le_bytes().to_vec()
    }};
}

/// The element-by-element reference result of `a op b`.
fn reference(dtype: DataType, op: ReduceOp, a: &[u8], b: &[u8]) -> Vec<u8> {
    let n = dtype.size();
    a.chunks(n)
        .zip(b.chunks(n))
        .flat_map(|(a, b)| match dtype {
            DataType::U8 => int_ref!(u8, op, a, b),
            DataType::I8 => int_ref!(i8, op, a, b),
            DataType::I16 => int_ref!(i16, op, a, b),
            DataType::U16 => int_ref!(u16, op, a, b),
            DataType::Bool => {
                let (x, y) = (a[0] != 0, b[0] != 0);
                let r = match op {
                    ReduceOp::Sum | ReduceOp::Average | ReduceOp::Max => x || y,
                    ReduceOp::Product | ReduceOp::Min => x && y,
                    ReduceOp::Adasum => unreachable!("not element-wise"),
                };
                vec![u8::from(r)]
            }
            DataType::I32 => int_ref!(i32, op, a, b),
            DataType::I64 => int_ref!(i64, op, a, b),
            DataType::F32 => {
                let (x, y) = (
                    f32::from_le_bytes(a.try_into().unwrap()),
                    f32::from_le_bytes(b.try_into().unwrap()),
                );
                // Sum and product of two f32 are exact in f64, so one rounding to f32 matches.
                (float_op(op, x.into(), y.into()) as f32)
                    .to_le_bytes()
                    .to_vec()
            }
            DataType::F64 => {
                let (x, y) = (
                    f64::from_le_bytes(a.try_into().unwrap()),
                    f64::from_le_bytes(b.try_into().unwrap()),
                );
                let r = match op {
                    ReduceOp::Sum | ReduceOp::Average => x + y,
                    ReduceOp::Product => x * y,
                    _ => float_op(op, x, y),
                };
                r.to_le_bytes().to_vec()
            }
            DataType::F16 => {
                let (x, y) = (
                    f16::from_le_bytes(a.try_into().unwrap()),
                    f16::from_le_bytes(b.try_into().unwrap()),
                );
                let r = float_op(op, x.to_f32().into(), y.to_f32().into()) as f32;
                f16::from_f32(r).to_le_bytes().to_vec()
            }
            DataType::Bf16 => {
                let (x, y) = (
                    bf16::from_le_bytes(a.try_into().unwrap()),
                    bf16::from_le_bytes(b.try_into().unwrap()),
                );
                let r = float_op(op, x.to_f32().into(), y.to_f32().into()) as f32;
                bf16::from_f32(r).to_le_bytes().to_vec()
            }
        })
        .collect()
}

/// Whether two elements are equal, counting any two NaNs as equal (NaN payloads may differ
/// between SIMD and scalar code).
fn same_element(dtype: DataType, a: &[u8], b: &[u8]) -> bool {
    let is_nan = |x: &[u8]| match dtype {
        DataType::F32 => f32::from_le_bytes(x.try_into().unwrap()).is_nan(),
        DataType::F64 => f64::from_le_bytes(x.try_into().unwrap()).is_nan(),
        DataType::F16 => f16::from_le_bytes(x.try_into().unwrap()).is_nan(),
        DataType::Bf16 => bf16::from_le_bytes(x.try_into().unwrap()).is_nan(),
        _ => false,
    };
    a == b || (is_nan(a) && is_nan(b))
}

fn assert_same(dtype: DataType, got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let n = dtype.size();
    for (i, (g, w)) in got.chunks(n).zip(want.chunks(n)).enumerate() {
        assert!(
            same_element(dtype, g, w),
            "{what}: element {i}: got {g:?}, want {w:?}"
        );
    }
}

#[test]
fn every_dtype_and_op_matches_the_reference_at_any_alignment() {
    for dtype in DataType::ALL {
        for op in ReduceOp::ELEMENTWISE {
            for (seed, elems) in [0usize, 1, 7, 255, 256, 257, 1000, 4099]
                .into_iter()
                .enumerate()
            {
                let len = elems * dtype.size();
                let a = noise(seed as u64 * 2 + 1, len);
                let b = noise(seed as u64 * 2 + 2, len);
                let want = reference(dtype, op, &a, &b);
                // Offsets move dst and src independently off their natural alignment.
                for (da, sa) in [(0, 0), (1, 0), (0, 3), (5, 2), (7, 7)] {
                    let mut dst_store = vec![0u8; len + 8];
                    let mut src_store = vec![0u8; len + 8];
                    dst_store[da..da + len].copy_from_slice(&a);
                    src_store[sa..sa + len].copy_from_slice(&b);
                    reduce_into(
                        &mut dst_store[da..da + len],
                        &src_store[sa..sa + len],
                        dtype,
                        op,
                    )
                    .unwrap();
                    let what = format!("{dtype} {op} {elems} elems, offsets {da}/{sa}");
                    assert_same(dtype, &dst_store[da..da + len], &want, &what);
                    // Bytes around the buffer are untouched.
                    assert!(dst_store[..da].iter().all(|&x| x == 0), "{what}: prefix");
                    assert!(
                        dst_store[da + len..].iter().all(|&x| x == 0),
                        "{what}: suffix"
                    );
                }
            }
        }
    }
}

#[test]
fn adasum_is_refused_and_its_identity_is_zero() {
    let mut a = 1f32.to_le_bytes();
    let err = reduce_into(&mut a, &2f32.to_le_bytes(), DataType::F32, ReduceOp::Adasum);
    assert_eq!(
        err,
        Err(ReduceError::NotElementwise {
            op: ReduceOp::Adasum
        })
    );
    assert_eq!(a, 1f32.to_le_bytes(), "nothing was written");
    let mut b = [0xffu8; 8];
    fill_identity(&mut b, DataType::F64, ReduceOp::Adasum);
    assert_eq!(b, [0; 8]);
}

#[test]
fn integers_wrap_instead_of_panicking() {
    let mut a = [127u8];
    reduce_into(&mut a, &[1], DataType::I8, ReduceOp::Sum).unwrap();
    assert_eq!(a[0] as i8, -128);
    let mut a = [200u8];
    reduce_into(&mut a, &[2], DataType::U8, ReduceOp::Product).unwrap();
    assert_eq!(a[0], 144);
    let mut a = i64::MAX.to_le_bytes();
    reduce_into(
        &mut a,
        &2i64.to_le_bytes(),
        DataType::I64,
        ReduceOp::Product,
    )
    .unwrap();
    assert_eq!(i64::from_le_bytes(a), -2);
}

#[test]
fn min_and_max_propagate_nan_from_either_side() {
    for op in [ReduceOp::Min, ReduceOp::Max] {
        for nan_first in [true, false] {
            let (x, y) = if nan_first {
                (f32::NAN, 1.0f32)
            } else {
                (1.0, f32::NAN)
            };
            let mut d = x.to_le_bytes();
            reduce_into(&mut d, &y.to_le_bytes(), DataType::F32, op).unwrap();
            assert!(
                f32::from_le_bytes(d).is_nan(),
                "f32 {op} nan_first={nan_first}"
            );

            let (x, y) = if nan_first {
                (f64::NAN, 1.0f64)
            } else {
                (1.0, f64::NAN)
            };
            let mut d = x.to_le_bytes();
            reduce_into(&mut d, &y.to_le_bytes(), DataType::F64, op).unwrap();
            assert!(
                f64::from_le_bytes(d).is_nan(),
                "f64 {op} nan_first={nan_first}"
            );

            let (x, y) = if nan_first {
                (f16::NAN, f16::ONE)
            } else {
                (f16::ONE, f16::NAN)
            };
            let mut d = x.to_le_bytes();
            reduce_into(&mut d, &y.to_le_bytes(), DataType::F16, op).unwrap();
            assert!(
                f16::from_le_bytes(d).is_nan(),
                "f16 {op} nan_first={nan_first}"
            );

            let (x, y) = if nan_first {
                (bf16::NAN, bf16::ONE)
            } else {
                (bf16::ONE, bf16::NAN)
            };
            let mut d = x.to_le_bytes();
            reduce_into(&mut d, &y.to_le_bytes(), DataType::Bf16, op).unwrap();
            assert!(
                bf16::from_le_bytes(d).is_nan(),
                "bf16 {op} nan_first={nan_first}"
            );
        }
    }
    // And plain values still give the min/max.
    let mut d = [3.0f32, -1.0].map(f32::to_le_bytes).concat();
    let s = [2.0f32, 5.0].map(f32::to_le_bytes).concat();
    reduce_into(&mut d, &s, DataType::F32, ReduceOp::Min).unwrap();
    assert_eq!(d, [2.0f32, -1.0].map(f32::to_le_bytes).concat());
}

#[test]
fn bad_lengths_are_errors() {
    assert_eq!(
        reduce_into(&mut [0; 8], &[0; 4], DataType::F32, ReduceOp::Sum),
        Err(ReduceError::LengthMismatch { dst: 8, src: 4 })
    );
    assert_eq!(
        reduce_into(&mut [0; 6], &[0; 6], DataType::F32, ReduceOp::Sum),
        Err(ReduceError::PartialElement {
            len: 6,
            dtype: DataType::F32
        })
    );
    assert_eq!(
        reduce_into(&mut [], &[], DataType::F64, ReduceOp::Max),
        Ok(())
    );
}

#[test]
fn identity_leaves_the_other_operand_unchanged() {
    for dtype in DataType::ALL {
        for op in ReduceOp::ELEMENTWISE {
            // Small non-negative integers are exact in every dtype and avoid -0.0 + 0.0.
            let x: Vec<u8> = (0..300u16)
                .flat_map(|i| {
                    let v = (i % 50) as u8;
                    match dtype {
                        DataType::U8 => vec![v],
                        DataType::I8 => (v as i8 - 20).to_le_bytes().to_vec(),
                        DataType::I16 => (i16::from(v) - 20).to_le_bytes().to_vec(),
                        DataType::U16 => u16::from(v).to_le_bytes().to_vec(),
                        DataType::Bool => vec![v % 2],
                        DataType::I32 => (i32::from(v) - 20).to_le_bytes().to_vec(),
                        DataType::I64 => (i64::from(v) - 20).to_le_bytes().to_vec(),
                        DataType::F32 => (f32::from(v) + 1.0).to_le_bytes().to_vec(),
                        DataType::F64 => (f64::from(v) + 1.0).to_le_bytes().to_vec(),
                        DataType::F16 => f16::from_f32(f32::from(v) + 1.0).to_le_bytes().to_vec(),
                        DataType::Bf16 => bf16::from_f32(f32::from(v) + 1.0).to_le_bytes().to_vec(),
                    }
                })
                .collect();
            // Misaligned on purpose, with a trailing partial element that must stay put.
            let mut store = vec![0xAAu8; x.len() + 2];
            let partial = if dtype.size() > 1 { 1 } else { 0 };
            fill_identity(&mut store[1..1 + x.len() + partial], dtype, op);
            assert_eq!(store[0], 0xAA);
            assert_eq!(
                store[1 + x.len()],
                0xAA,
                "{dtype} {op}: partial element touched"
            );
            reduce_into(&mut store[1..1 + x.len()], &x, dtype, op).unwrap();
            assert_eq!(&store[1..1 + x.len()], &x[..], "{dtype} {op}");
        }
    }
}

#[test]
fn scale_rounds_integers_toward_zero_and_floats_once() {
    let mut b: Vec<u8> = [-7i32, 7, 100, -1]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    scale(&mut b, DataType::I32, 0.5);
    let got: Vec<i32> = b
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, [-3, 3, 50, 0]);

    let mut b = vec![200u8, 3];
    scale(&mut b, DataType::U8, 2.0);
    assert_eq!(b, [255, 6], "u8 saturates at its bounds");

    // i64 beyond f64's exact range survives a factor of one.
    let big = (1i64 << 60) + 1;
    let mut b = big.to_le_bytes();
    scale(&mut b, DataType::I64, 1.0);
    assert_eq!(i64::from_le_bytes(b), big);

    // Misaligned f32, f64, f16, bf16 all divide by 4 exactly.
    let mut store = vec![0u8; 1 + 4 * 600];
    for (i, c) in store[1..].chunks_mut(4).enumerate() {
        c.copy_from_slice(&(i as f32 * 4.0).to_le_bytes());
    }
    scale(&mut store[1..], DataType::F32, 0.25);
    for (i, c) in store[1..].chunks(4).enumerate() {
        assert_eq!(f32::from_le_bytes(c.try_into().unwrap()), i as f32);
    }
    let mut b: Vec<u8> = (0..600)
        .flat_map(|i| (f64::from(i) * 3.0).to_le_bytes())
        .collect();
    scale(&mut b, DataType::F64, 1.0 / 3.0);
    for (i, c) in b.chunks(8).enumerate() {
        assert!((f64::from_le_bytes(c.try_into().unwrap()) - i as f64).abs() < 1e-12);
    }
    let mut b: Vec<u8> = (0..600)
        .flat_map(|i| f16::from_f32((i % 100) as f32 * 4.0).to_le_bytes())
        .collect();
    scale(&mut b[..], DataType::F16, 0.25);
    for (i, c) in b.chunks(2).enumerate() {
        assert_eq!(
            f16::from_le_bytes(c.try_into().unwrap()).to_f32(),
            (i % 100) as f32
        );
    }
    let mut b: Vec<u8> = (0..600)
        .flat_map(|i| bf16::from_f32((i % 100) as f32 * 4.0).to_le_bytes())
        .collect();
    scale(&mut b[..], DataType::Bf16, 0.25);
    for (i, c) in b.chunks(2).enumerate() {
        assert_eq!(
            bf16::from_le_bytes(c.try_into().unwrap()).to_f32(),
            (i % 100) as f32
        );
    }
}

#[test]
fn bf16_conversions_agree_with_the_half_crate() {
    use super::half::{bf16_narrow, bf16_widen};
    // Every 16-bit pattern widens exactly, and narrows back to itself unless it is NaN.
    for h in 0..=u16::MAX {
        let (w, want) = (bf16_widen(h), bf16::from_bits(h).to_f32());
        assert!(
            w.to_bits() == want.to_bits() || (w.is_nan() && want.is_nan()),
            "bf16 {h:#06x}"
        );
        if !w.is_nan() {
            assert_eq!(bf16_narrow(w), h, "bf16 round trip {h:#06x}");
        }
    }
    // Narrowing rounds like `half` (ties, subnormals, overflow to Inf); NaN stays NaN.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let specials = [
        0.0f32,
        -0.0,
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
        1e-40,
        f32::MAX,
        f32::INFINITY,
        f32::NAN,
    ];
    let samples = specials
        .into_iter()
        .map(f32::to_bits)
        .chain((0..400_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u32
        }));
    for bits in samples {
        for bits in [bits, bits ^ 0x8000_0000] {
            let f = f32::from_bits(bits);
            let (got, want) = (bf16_narrow(f), bf16::from_f32(f));
            assert!(
                got == want.to_bits() || (want.is_nan() && bf16::from_bits(got).is_nan()),
                "bf16 {f:e}: {got:#06x} vs {:#06x}",
                want.to_bits()
            );
        }
    }
}

#[test]
fn sixteen_bit_integers_reduce_and_wrap() {
    let le = |v: &[i16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let ops = [
        (ReduceOp::Sum, [i16::MIN + 1, 2, -5]),
        (ReduceOp::Product, [-2, -15, 4]),
        (ReduceOp::Min, [2, -3, -4]),
        (ReduceOp::Max, [i16::MAX, 5, -1]),
    ];
    for (op, want) in ops {
        let mut a = le(&[i16::MAX, -3, -1]);
        reduce_into(&mut a, &le(&[2, 5, -4]), DataType::I16, op).unwrap();
        assert_eq!(a, le(&want), "i16 {op}");
    }
    let le = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut a = le(&[u16::MAX, 300, 7]);
    reduce_into(&mut a, &le(&[2, 300, 9]), DataType::U16, ReduceOp::Sum).unwrap();
    assert_eq!(a, le(&[1, 600, 16]), "u16 sum wraps");
    let mut a = le(&[u16::MAX, 300, 7]);
    reduce_into(&mut a, &le(&[2, 300, 9]), DataType::U16, ReduceOp::Max).unwrap();
    assert_eq!(a, le(&[u16::MAX, 300, 9]), "u16 max is unsigned");
    let mut b = le(&[5, 40_000]);
    scale(&mut b, DataType::U16, 0.5);
    assert_eq!(b, le(&[2, 20_000]), "u16 scale truncates");
}

#[test]
fn bool_is_or_for_sum_and_max_and_and_for_product_and_min() {
    // Every pair of truth values, with 0xff as a non-canonical true that must read as true.
    let a = [0u8, 0, 1, 0xff];
    let b = [0u8, 1, 0, 1];
    for (op, want) in [
        (ReduceOp::Sum, [0, 1, 1, 1]),
        (ReduceOp::Max, [0, 1, 1, 1]),
        (ReduceOp::Product, [0, 0, 0, 1]),
        (ReduceOp::Min, [0, 0, 0, 1]),
    ] {
        let mut d = a;
        reduce_into(&mut d, &b, DataType::Bool, op).unwrap();
        assert_eq!(d, want, "bool {op}");
    }
    let mut t = [0u8; 3];
    fill_identity(&mut t, DataType::Bool, ReduceOp::Min);
    assert_eq!(t, [1, 1, 1], "true is the identity of AND");
    let mut f = [1u8; 3];
    fill_identity(&mut f, DataType::Bool, ReduceOp::Sum);
    assert_eq!(f, [0, 0, 0], "false is the identity of OR");
}
