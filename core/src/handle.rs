//! Handles: what `enqueue` returns at once and the caller later waits on.
//!
//! A handle owns the caller's tensor while the operation runs (the engine thread reads and
//! writes it) and gives it back on completion, so no buffer is ever shared mutably between
//! threads. Waiting spins briefly before sleeping, while recent spins paid off: a sleeping
//! thread costs microseconds to wake, which would dominate small collectives.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hora_transport::AdaptiveSpin;
use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::types::DataType;

/// Memory a collective reads and writes: the caller's tensor, lent to the engine.
pub trait TensorData: Send + 'static {
    /// The bytes, read-only.
    fn bytes(&self) -> &[u8];
    /// The bytes, writable.
    fn bytes_mut(&mut self) -> &mut [u8];
    /// For getting the concrete type back after completion.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<T: bytemuck::Pod + Send> TensorData for Vec<T> {
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self)
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(self)
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// One 64-byte block of an [`OutputBuffer`]. TensorFlow's CPU kernels require 64-byte-aligned
/// tensor memory, so with this alignment the Python binding hands results to TensorFlow
/// without a copy (and any element type can view them).
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Block([u64; 8]);

/// An engine-allocated output buffer, 64-byte aligned so it can be viewed as any element type
/// and handed to frameworks that need aligned memory.
#[derive(Debug, Clone, Default)]
pub struct OutputBuffer {
    words: Vec<Block>,
    len: usize,
}

impl OutputBuffer {
    /// A zeroed buffer of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        Self {
            words: vec![Block([0; 8]); len.div_ceil(64)],
            len,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    /// The bytes, writable.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }

    /// Copies the contents out as elements of `T` (the length must be a multiple of its size).
    pub fn to_vec<T: bytemuck::Pod>(&self) -> Vec<T> {
        bytemuck::pod_collect_to_vec(self.as_bytes())
    }
}

/// What a completed operation hands back.
#[derive(Default)]
pub struct Completion {
    /// The caller's tensor (for in-place operations it holds the result).
    pub data: Option<Box<dyn TensorData>>,
    /// The result of allgather, alltoall and reducescatter (allocated by the engine).
    pub output: Option<OutputBuffer>,
    /// Shape of `output`.
    pub output_shape: Vec<u64>,
    /// Alltoall: rows received from each rank.
    pub received_splits: Vec<u64>,
    /// Join: the last rank that joined.
    pub last_joined: Option<usize>,
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("data", &self.data.as_ref().map(|d| d.bytes().len()))
            .field("output", &self.output.as_ref().map(|o| o.len()))
            .field("output_shape", &self.output_shape)
            .field("received_splits", &self.received_splits)
            .field("last_joined", &self.last_joined)
            .finish()
    }
}

impl Completion {
    /// Takes the caller's tensor back as its concrete type.
    pub fn take_data<T: 'static>(&mut self) -> Option<T> {
        let data = self.data.take()?;
        data.into_any().downcast::<T>().ok().map(|b| *b)
    }
}

#[derive(Debug)]
pub(crate) struct HandleState {
    name: String,
    done: AtomicBool,
    result: Mutex<Option<Result<Completion>>>,
    cv: Condvar,
    spin: Arc<AdaptiveSpin>,
}

impl HandleState {
    pub(crate) fn new(name: String, spin: Arc<AdaptiveSpin>) -> Arc<Self> {
        Arc::new(Self {
            name,
            done: AtomicBool::new(false),
            result: Mutex::new(None),
            cv: Condvar::new(),
            spin,
        })
    }

    pub(crate) fn complete(&self, result: Result<Completion>) {
        let mut slot = self.result.lock();
        if slot.is_none() && !self.done.load(Ordering::Acquire) {
            *slot = Some(result);
            self.done.store(true, Ordering::Release);
        }
        drop(slot);
        self.cv.notify_all();
    }
}

/// A running operation. Wait on it, poll it, or drop it (the operation still completes).
#[derive(Debug)]
pub struct Handle {
    state: Arc<HandleState>,
    taken: bool,
}

impl Handle {
    pub(crate) fn new(state: Arc<HandleState>) -> Self {
        Self {
            state,
            taken: false,
        }
    }

    /// The tensor name this handle is for.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// True once the operation has finished (successfully or not); never blocks.
    pub fn poll(&self) -> bool {
        self.state.done.load(Ordering::Acquire)
    }

    /// Waits for completion and returns the result. A second wait returns an error.
    pub fn wait(self) -> Result<Completion> {
        self.wait_until(None)
    }

    /// Waits at most `timeout`; on timeout the handle is returned so the caller can wait again.
    pub fn wait_timeout(self, timeout: Duration) -> std::result::Result<Result<Completion>, Self> {
        let deadline = Instant::now() + timeout;
        if self.block_until(Some(deadline)) {
            Ok(self.wait_until(None))
        } else {
            Err(self)
        }
    }

    /// Blocks until done or the deadline; returns whether it is done.
    fn block_until(&self, deadline: Option<Instant>) -> bool {
        if self.poll() {
            return true;
        }
        // Spin first while that pays: a sleeping thread takes microseconds to wake up.
        if self.state.spin.spin(|| self.poll()) {
            return true;
        }
        let mut slot = self.state.result.lock();
        while slot.is_none() {
            match deadline {
                Some(d) => {
                    if self.state.cv.wait_until(&mut slot, d).timed_out() {
                        return slot.is_some();
                    }
                }
                None => self.state.cv.wait(&mut slot),
            }
        }
        true
    }

    fn wait_until(mut self, deadline: Option<Instant>) -> Result<Completion> {
        if !self.block_until(deadline) {
            return Err(Error::WaitTimeout {
                tensor: self.state.name.clone(),
            });
        }
        self.taken = true;
        self.state.result.lock().take().unwrap_or_else(|| {
            Err(Error::Bug(format!(
                "handle for '{}' completed twice",
                self.state.name
            )))
        })
    }
}

/// Rust element types hora can reduce, with their [`DataType`].
pub trait Element: bytemuck::Pod + Send + 'static {
    /// The matching data type.
    const DTYPE: DataType;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => { $(impl Element for $t { const DTYPE: DataType = DataType::$d; })* };
}
element!(u8 => U8, i8 => I8, i16 => I16, u16 => U16, i32 => I32, i64 => I64, half::f16 => F16, half::bf16 => Bf16, f32 => F32, f64 => F64);

#[cfg(test)]
mod output_buffer_tests {
    use super::OutputBuffer;

    #[test]
    fn zeroed_buffers_are_64_byte_aligned_and_exactly_sized() {
        for len in [0usize, 1, 7, 63, 64, 65, 4096, 200_000] {
            let mut buf = OutputBuffer::zeroed(len);
            assert_eq!(buf.len(), len);
            assert_eq!(buf.as_bytes().len(), len);
            assert!(buf.as_bytes().iter().all(|&b| b == 0));
            assert_eq!(buf.as_bytes().as_ptr() as usize % 64, 0, "len {len}");
            buf.as_bytes_mut().fill(1);
            assert_eq!(buf.to_vec::<u8>().len(), len);
        }
    }
}
