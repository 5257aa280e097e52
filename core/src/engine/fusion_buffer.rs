//! The fusion buffer: one reused host buffer that several tensors are packed into so that one
//! collective moves them all.
//!
//! It grows to the largest need seen and never shrinks, so a training loop that fuses the same
//! gradients every step allocates once. Packing copies each tensor in (applying the prescale
//! factor, or filling the reduction's identity for a rank that joined and has no tensor);
//! unpacking copies the result back out. Reducescatter uses the same memory as its work copy,
//! because its algorithm overwrites the input the caller still owns.
//!
//! Each executor owns one; a device executor would own a device-memory buffer of its own
//! rather than share this one.

use crate::reduce;
use crate::types::{DataType, ReduceOp};

#[cfg(test)]
mod tests;

/// A reused byte buffer for fused tensors.
#[derive(Debug, Default)]
pub(crate) struct FusionBuffer {
    bytes: Vec<u8>,
}

impl FusionBuffer {
    /// An empty buffer; it allocates on first use.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Bytes held (the largest `len` asked for so far).
    pub(crate) fn capacity(&self) -> usize {
        self.bytes.len()
    }

    /// The first `len` bytes, growing the buffer if it is smaller (contents are unspecified).
    pub(crate) fn get(&mut self, len: usize) -> &mut [u8] {
        if self.bytes.len() < len {
            self.bytes.resize(len, 0);
        }
        &mut self.bytes[..len]
    }

    /// Packs `parts` (each `(length, bytes)`) back to back into the first `total` bytes and
    /// returns them: present bytes are copied and multiplied by `prescale`; a part without bytes
    /// (a rank that joined) gets the identity of `op`, unscaled, so it does not change the
    /// result.
    pub(crate) fn pack<'a>(
        &mut self,
        total: usize,
        parts: impl IntoIterator<Item = (usize, Option<&'a [u8]>)>,
        dtype: DataType,
        op: ReduceOp,
        prescale: f64,
    ) -> &mut [u8] {
        let buf = self.get(total);
        let mut off = 0;
        for (len, src) in parts {
            let dst = &mut buf[off..off + len];
            match src {
                Some(src) => {
                    dst.copy_from_slice(src);
                    if prescale != 1.0 {
                        reduce::scale(dst, dtype, prescale);
                    }
                }
                None => reduce::fill_identity(dst, dtype, op),
            }
            off += len;
        }
        buf
    }

    /// Copies consecutive slices of the buffer back out to `parts` (each `(length,
    /// destination)`); a part without a destination is skipped over.
    pub(crate) fn unpack<'a>(
        &self,
        parts: impl IntoIterator<Item = (usize, Option<&'a mut [u8]>)>,
    ) {
        let mut off = 0;
        for (len, dst) in parts {
            if let Some(dst) = dst {
                dst.copy_from_slice(&self.bytes[off..off + len]);
            }
            off += len;
        }
    }
}
