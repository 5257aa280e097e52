//! Fusion buffer packing and reuse.

use super::FusionBuffer;
use crate::types::{DataType, ReduceOp};

fn f32s(v: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

#[test]
fn packs_scaled_parts_and_identity_for_missing_ones_then_unpacks() {
    let mut fb = FusionBuffer::new();
    let a = f32s(&[1.0, 2.0]);
    let c = f32s(&[3.0]);
    let packed = fb
        .pack(
            16,
            [(8, Some(&a[..])), (4, None), (4, Some(&c[..]))],
            DataType::F32,
            ReduceOp::Product,
            2.0,
        )
        .to_vec();
    assert_eq!(packed, f32s(&[2.0, 4.0, 1.0, 6.0]));
    let mut out_a = vec![0u8; 8];
    let mut out_c = vec![0u8; 4];
    fb.unpack([
        (8, Some(&mut out_a[..])),
        (4, None),
        (4, Some(&mut out_c[..])),
    ]);
    assert_eq!(out_a, f32s(&[2.0, 4.0]));
    assert_eq!(out_c, f32s(&[6.0]));
}

#[test]
fn grows_to_the_largest_need_and_never_shrinks() {
    let mut fb = FusionBuffer::new();
    assert_eq!(fb.capacity(), 0);
    assert_eq!(fb.get(100).len(), 100);
    let ptr = fb.get(10).as_ptr();
    assert_eq!(fb.capacity(), 100);
    // A smaller need reuses the same memory.
    assert_eq!(fb.get(50).as_ptr(), ptr);
    assert_eq!(fb.get(1000).len(), 1000);
    assert_eq!(fb.capacity(), 1000);
}
