//! Framework memory lent to the engine: a raw (pointer, length) taken from a tensor by the
//! Python layer, plus a reference that keeps the tensor alive until the engine lets go.

use std::any::Any;

use pyo3::prelude::*;

/// A contiguous CPU buffer owned by a Python object (a torch tensor, a numpy array...).
pub(crate) struct LentTensor {
    ptr: *mut u8,
    len: usize,
    /// Keeps the owner (and so the memory) alive while the engine holds this value. Dropped
    /// without the GIL only if the handle is abandoned; pyo3 then defers the decref.
    _owner: Py<PyAny>,
}

// SAFETY: the pointer is only dereferenced through `bytes`/`bytes_mut`, by one thread at a
// time: the engine owns this value (moved into it by `enqueue`) until the operation
// completes. The owner object stays referenced for that whole time, so the memory is not
// freed, and the Python layer's contract (as in Horovod) is that the caller does not touch
// the tensor until its handle completes.
unsafe impl Send for LentTensor {}

impl LentTensor {
    /// Wraps `len` bytes at `ptr` owned by `owner`. `ptr` may be 0 only when `len` is 0.
    pub(crate) fn new(owner: Py<PyAny>, ptr: usize, len: usize) -> Option<Self> {
        if ptr == 0 && len != 0 {
            return None;
        }
        Some(Self {
            ptr: ptr as *mut u8,
            len,
            _owner: owner,
        })
    }
}

impl hora::TensorData for LentTensor {
    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` points at `len` live, initialised bytes of the owner's contiguous
        // storage (checked by the Python layer), kept alive by `_owner`; see the Send impl.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as in `bytes`; `&mut self` makes this the only live view on the Rust side,
        // and the caller does not touch the tensor until completion.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}
