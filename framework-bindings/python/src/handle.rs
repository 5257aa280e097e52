//! `hora._core.Handle` (a running operation) and `hora._core.Output` (an engine-allocated
//! result exposed to Python through the buffer protocol, without a copy).

use std::os::raw::c_int;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hora::handle::OutputBuffer;
use pyo3::prelude::*;

use crate::error::{HoraError, to_py};

/// How long one GIL-free wait lasts before Python gets a chance to run signal handlers, so
/// Ctrl-C interrupts a wait promptly.
const WAIT_SLICE: Duration = Duration::from_millis(20);

/// A running collective. `wait()` blocks (without the GIL) and returns the result.
#[pyclass(module = "hora._core", name = "Handle")]
pub(crate) struct PyHandle {
    inner: Mutex<Option<hora::Handle>>,
    name: String,
}

impl PyHandle {
    pub(crate) fn new(handle: hora::Handle) -> Self {
        let name = handle.name().to_string();
        Self {
            inner: Mutex::new(Some(handle)),
            name,
        }
    }

    fn take(&self) -> PyResult<hora::Handle> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or_else(|| {
                HoraError::new_err(format!(
                    "the handle of '{}' was already waited on",
                    self.name
                ))
            })
    }

    fn put_back(&self, h: hora::Handle) {
        *self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(h);
    }
}

/// Waits for `h` in short GIL-free slices, checking for signals between them. Past
/// `deadline` (if any) it fails with `WaitTimeoutError`; then, as on a signal, the handle goes
/// to `give_back` so the caller can wait again.
pub(crate) fn wait_interruptible(
    py: Python<'_>,
    mut h: hora::Handle,
    deadline: Option<Instant>,
    give_back: impl FnOnce(hora::Handle),
) -> PyResult<hora::Completion> {
    let result = loop {
        if h.poll() {
            break h.wait();
        }
        let slice = match deadline {
            Some(d) => WAIT_SLICE.min(d.saturating_duration_since(Instant::now())),
            None => WAIT_SLICE,
        };
        match py.detach(move || h.wait_timeout(slice)) {
            Ok(r) => break r,
            Err(back) => {
                if let Err(e) = py.check_signals() {
                    give_back(back);
                    return Err(e);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    let tensor = back.name().to_string();
                    give_back(back);
                    return Err(to_py(py, &hora::Error::WaitTimeout { tensor }));
                }
                h = back;
            }
        }
    };
    result.map_err(|e| to_py(py, &e))
}

/// What `Handle.wait` returns for operations with an engine-allocated result:
/// `(output, shape, received_splits)`.
type WaitResult = (Option<Py<Output>>, Vec<u64>, Vec<u64>);

#[pymethods]
impl PyHandle {
    /// The tensor name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// True once the operation has finished; never blocks.
    fn poll(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_none_or(hora::Handle::poll)
    }

    /// Waits for completion, at most `timeout` seconds if given. Returns None for in-place
    /// operations, otherwise `(output, shape, received_splits)`; raises a `HoraError` subclass
    /// on failure, `WaitTimeoutError` (the handle stays valid) when the timeout passes.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<WaitResult>> {
        let deadline = match timeout {
            None => None,
            Some(t) => Some(
                Duration::try_from_secs_f64(t)
                    .ok()
                    .and_then(|t| Instant::now().checked_add(t))
                    .ok_or_else(|| {
                        to_py(
                            py,
                            &hora::Error::InvalidArgument {
                                rank: hora::rank().unwrap_or(0),
                                tensor: self.name.clone(),
                                detail: format!("wait timeout {t} is not a number of seconds >= 0"),
                            },
                        )
                    })?,
            ),
        };
        let h = self.take()?;
        let mut c = wait_interruptible(py, h, deadline, |back| self.put_back(back))?;
        // The lent tensor goes back to Python here, with the GIL held.
        drop(c.data.take());
        match c.output.take() {
            None if c.output_shape.is_empty() => Ok(None),
            out => {
                let out = match out {
                    Some(buf) => Some(Py::new(py, Output::new(buf))?),
                    None => None,
                };
                Ok(Some((out, c.output_shape, c.received_splits)))
            }
        }
    }
}

/// Bytes the engine allocated for a result; supports the buffer protocol (writable), so
/// `torch.frombuffer(out, dtype=...)` views it without a copy and keeps it alive.
#[pyclass(module = "hora._core", name = "Output", frozen)]
pub(crate) struct Output {
    /// Owns the memory `ptr` points into; never touched again on the Rust side.
    _buf: OutputBuffer,
    ptr: SendPtr,
    len: usize,
}

struct SendPtr(*mut u8);
// SAFETY: the pointer targets the heap block of `Output::_buf`, which never moves or resizes
// after construction; Rust never reads or writes through `_buf` again, so the only accesses
// are the buffer-protocol views Python makes, which Python itself serialises (GIL).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl Output {
    fn new(mut buf: OutputBuffer) -> Self {
        let len = buf.len();
        let ptr = SendPtr(buf.as_bytes_mut().as_mut_ptr());
        Self {
            _buf: buf,
            ptr,
            len,
        }
    }
}

#[pymethods]
impl Output {
    fn __len__(&self) -> usize {
        self.len
    }

    /// # Safety
    /// Called by CPython with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let (ptr, len) = {
            let me = slf.get();
            (me.ptr.0, me.len)
        };
        let len = isize::try_from(len).map_err(|_| HoraError::new_err("output too large"))?;
        // SAFETY: `view` is the caller's buffer struct; `ptr`/`len` describe memory owned by
        // `slf`, which PyBuffer_FillInfo references (view.obj) so it outlives the view.
        let rc =
            unsafe { pyo3::ffi::PyBuffer_FillInfo(view, slf.as_ptr(), ptr.cast(), len, 0, flags) };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }
}
