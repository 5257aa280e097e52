//! # hora-capi: the C ABI
//!
//! ## Design overview
//! A thin layer over `hora`'s public API for C, C++, Julia, Go and other callers: plain
//! enums for dtypes, ops and status codes, caller-owned buffers, opaque handles for the async
//! forms, and a thread-local message behind `hora_last_error()`. Every entry point catches
//! panics, so none crosses the boundary; bad pointers and sizes are reported as
//! `HORA_STATUS_INVALID_ARGUMENT`. The header `include/hora.h` is generated from this file by
//! cbindgen (a test fails if the checked-in header drifts).
//!
//! What this crate does *not* do: own tensors (the caller's memory is used in place and must
//! stay valid until an async handle completes), or know any framework.
#![allow(non_camel_case_types)]

mod collectives;
mod process_sets;

pub use collectives::*;
pub use process_sets::*;

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};

use hora_core::handle::{Completion, Handle, TensorData};
use hora_core::{DataType, Error, ReduceOp};

/// Outcome of a call; `HORA_STATUS_OK` is 0, anything else has a message in `hora_last_error()`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum hora_status {
    /// Success.
    Ok = 0,
    /// `hora_init` has not been called (or `hora_shutdown` was).
    NotInitialized = 1,
    /// The process was not started by a launcher such as `horovodrun`.
    NotLaunched = 2,
    /// An environment variable has a value hora cannot use.
    InvalidConfig = 3,
    /// A pointer, size, dtype, op or root is invalid.
    InvalidArgument = 4,
    /// Ranks disagree on a tensor's dtype, shape, op or root.
    Mismatch = 5,
    /// A peer failed or a connection broke.
    Transport = 6,
    /// hora is shut down.
    ShutDown = 7,
    /// A wait passed its deadline (the operation may still complete).
    Timeout = 8,
    /// An internal error (a bug in hora).
    Internal = 9,
    /// Finding the other ranks failed (the launcher's store or a peer could not be reached).
    Rendezvous = 10,
}

/// Element type of a buffer; the values are the engine's `DataType` codes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum hora_dtype {
    /// uint8_t
    U8 = 0,
    /// int8_t
    I8 = 1,
    /// int32_t
    I32 = 2,
    /// int64_t
    I64 = 3,
    /// IEEE half (16 bits)
    F16 = 4,
    /// bfloat16 (16 bits)
    Bf16 = 5,
    /// float
    F32 = 6,
    /// double
    F64 = 7,
    /// int16_t
    I16 = 8,
    /// uint16_t
    U16 = 9,
    /// bool, one byte (0 false, non-zero true): Sum and Max are OR, Product and Min AND;
    /// Average and scale factors are refused
    Bool = 10,
}

/// How values are combined; the values are the engine's `ReduceOp` codes, which are Horovod's.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum hora_op {
    /// Sum divided by the number of ranks.
    Average = 0,
    /// Sum.
    Sum = 1,
    /// Adasum (float types only, allreduce only): pairwise `(1 - a·b/2|a|²) a + (1 - a·b/2|b|²) b`.
    Adasum = 2,
    /// Minimum.
    Min = 3,
    /// Maximum.
    Max = 4,
    /// Product.
    Product = 5,
}

/// A running asynchronous operation (opaque).
#[derive(Debug)]
pub struct hora_handle {
    handle: Option<Handle>,
    result: Option<Result<(), Error>>,
}

impl From<hora_dtype> for DataType {
    fn from(d: hora_dtype) -> Self {
        match d {
            hora_dtype::U8 => Self::U8,
            hora_dtype::I8 => Self::I8,
            hora_dtype::I32 => Self::I32,
            hora_dtype::I64 => Self::I64,
            hora_dtype::F16 => Self::F16,
            hora_dtype::Bf16 => Self::Bf16,
            hora_dtype::F32 => Self::F32,
            hora_dtype::F64 => Self::F64,
            hora_dtype::I16 => Self::I16,
            hora_dtype::U16 => Self::U16,
            hora_dtype::Bool => Self::Bool,
        }
    }
}

impl From<hora_op> for ReduceOp {
    fn from(o: hora_op) -> Self {
        match o {
            hora_op::Sum => Self::Sum,
            hora_op::Average => Self::Average,
            hora_op::Min => Self::Min,
            hora_op::Max => Self::Max,
            hora_op::Product => Self::Product,
            hora_op::Adasum => Self::Adasum,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// This thread's last error message, as `hora_last_error` gives it.
fn last_error_text() -> String {
    LAST_ERROR.with(|e| e.borrow().to_string_lossy().into_owned())
}

/// The one mapping from hora's errors to C status codes.
fn status_of(e: &Error) -> hora_status {
    match e {
        Error::NotInitialized => hora_status::NotInitialized,
        Error::NotLaunched { .. } => hora_status::NotLaunched,
        Error::Rendezvous { .. } => hora_status::Rendezvous,
        Error::InvalidConfig { .. } => hora_status::InvalidConfig,
        Error::InvalidArgument { .. } => hora_status::InvalidArgument,
        Error::Mismatch { .. } => hora_status::Mismatch,
        Error::Transport { .. } => hora_status::Transport,
        Error::ShutDown { .. } => hora_status::ShutDown,
        Error::WaitTimeout { .. } => hora_status::Timeout,
        _ => hora_status::Internal,
    }
}

/// Runs `f`, turning errors and panics into a status code plus `hora_last_error()`.
fn guard(f: impl FnOnce() -> Result<(), Error>) -> hora_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_last_error("");
            hora_status::Ok
        }
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            status_of(&e)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error (a hora bug): {what}"));
            hora_status::Internal
        }
    }
}

fn bad(detail: impl Into<String>) -> Error {
    Error::InvalidArgument {
        rank: hora_core::rank().unwrap_or(0),
        tensor: "-".into(),
        detail: detail.into(),
    }
}

/// A caller-owned buffer lent to the engine for one operation.
struct CBuffer {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the C caller promises the buffer stays valid and untouched until the operation
// completes (blocking calls wait before returning; async calls document it for hora_wait).
unsafe impl Send for CBuffer {}

impl TensorData for CBuffer {
    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: non-null (checked at construction) and valid for `len` bytes per the contract.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as above; the engine is the only user while the operation runs.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

fn buffer(
    ptr: *const std::ffi::c_void,
    count: usize,
    dtype: hora_dtype,
    what: &str,
) -> Result<CBuffer, Error> {
    let len = count
        .checked_mul(DataType::from(dtype).size())
        .ok_or_else(|| bad(format!("{what}: count {count} overflows")))?;
    if ptr.is_null() && len > 0 {
        return Err(bad(format!("{what} is NULL but count is {count}")));
    }
    Ok(CBuffer {
        ptr: ptr as *mut u8,
        len,
    })
}

static AUTO_NAME: AtomicU64 = AtomicU64::new(0);

/// The tensor name, or a fresh one when `name` is NULL.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
unsafe fn name_of(name: *const c_char, kind: &str) -> Result<String, Error> {
    if name.is_null() {
        return Ok(format!(
            "c.{kind}.noname.{}",
            AUTO_NAME.fetch_add(1, Ordering::Relaxed)
        ));
    }
    // SAFETY: the caller passes a NUL-terminated string (documented in the header).
    let s = unsafe { CStr::from_ptr(name) };
    s.to_str()
        .map(str::to_owned)
        .map_err(|_| bad("tensor name is not UTF-8"))
}

/// Copies an engine-allocated output into the caller's buffer.
///
/// # Safety
/// `out` is valid for `out_capacity` elements; `out_count` is NULL or writable.
unsafe fn copy_out(
    c: &Completion,
    dtype: hora_dtype,
    out: *mut std::ffi::c_void,
    out_capacity: usize,
    out_count: *mut usize,
) -> Result<(), Error> {
    let bytes = c.output.as_ref().map(|o| o.as_bytes()).unwrap_or(&[]);
    let count = bytes.len() / DataType::from(dtype).size();
    if !out_count.is_null() {
        // SAFETY: the caller passes NULL or a writable size_t.
        unsafe { *out_count = count };
    }
    if count > out_capacity {
        return Err(bad(format!(
            "the result has {count} elements but out_capacity is {out_capacity}"
        )));
    }
    if !bytes.is_empty() {
        if out.is_null() {
            return Err(bad("out is NULL"));
        }
        // SAFETY: `out` holds at least `out_capacity >= count` elements (the caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), out as *mut u8, bytes.len()) };
    }
    Ok(())
}

fn write_int(out: *mut c_int, v: usize) -> Result<(), Error> {
    if out.is_null() {
        return Err(bad("output pointer is NULL"));
    }
    // SAFETY: checked non-null; the caller passes a writable int.
    unsafe { *out = v as c_int };
    Ok(())
}

/// Starts hora from the launcher's environment (`horovodrun -np N ./program`).
#[unsafe(no_mangle)]
pub extern "C" fn hora_init() -> hora_status {
    guard(hora_core::init)
}

/// Stops hora; pending operations fail with `HORA_STATUS_SHUT_DOWN`.
#[unsafe(no_mangle)]
pub extern "C" fn hora_shutdown() -> hora_status {
    guard(|| {
        hora_core::shutdown();
        Ok(())
    })
}

/// Whether hora is initialized (1) or not (0).
#[unsafe(no_mangle)]
pub extern "C" fn hora_is_initialized() -> c_int {
    c_int::from(hora_core::is_initialized())
}

/// Writes this process's rank to `*out`.
#[unsafe(no_mangle)]
pub extern "C" fn hora_rank(out: *mut c_int) -> hora_status {
    guard(|| write_int(out, hora_core::rank()?))
}

/// Writes the number of ranks to `*out`.
#[unsafe(no_mangle)]
pub extern "C" fn hora_size(out: *mut c_int) -> hora_status {
    guard(|| write_int(out, hora_core::size()?))
}

/// Writes the rank among this host's processes to `*out`.
#[unsafe(no_mangle)]
pub extern "C" fn hora_local_rank(out: *mut c_int) -> hora_status {
    guard(|| write_int(out, hora_core::local_rank()?))
}

/// Writes the number of processes on this host to `*out`.
#[unsafe(no_mangle)]
pub extern "C" fn hora_local_size(out: *mut c_int) -> hora_status {
    guard(|| write_int(out, hora_core::local_size()?))
}

/// The message of this thread's last failed call ("" after a success); valid until the
/// thread's next hora call.
#[unsafe(no_mangle)]
pub extern "C" fn hora_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Returns 1 if the operation behind `handle` has finished (then `hora_wait` returns at
/// once), 0 if not, -1 for a NULL handle.
///
/// # Safety
/// `handle` is NULL or a live handle from this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_poll(handle: *const hora_handle) -> c_int {
    if handle.is_null() {
        return -1;
    }
    // SAFETY: a live handle from `hora_*_async` (caller contract).
    let h = unsafe { &*handle };
    c_int::from(h.result.is_some() || h.handle.as_ref().is_some_and(|h| h.poll()))
}

/// Waits for the operation and frees the handle; returns its status.
///
/// # Safety
/// `handle` is a live handle from this library; it must not be used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_wait(handle: *mut hora_handle) -> hora_status {
    if handle.is_null() {
        set_last_error("hora_wait: handle is NULL");
        return hora_status::InvalidArgument;
    }
    // SAFETY: ownership comes back from `Box::into_raw` in `hora_*_async`.
    let mut h = unsafe { Box::from_raw(handle) };
    guard(move || match h.result.take() {
        Some(r) => r,
        None => h.handle.take().map_or(Ok(()), |h| h.wait().map(|_| ())),
    })
}

/// Frees a handle without waiting; the operation still completes in the background, so its
/// buffer must stay valid until then.
///
/// # Safety
/// `handle` is NULL or a live handle from this library; it must not be used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_release(handle: *mut hora_handle) {
    if !handle.is_null() {
        // SAFETY: ownership comes back from `Box::into_raw`.
        drop(unsafe { Box::from_raw(handle) });
    }
}

/// This rank has no more work; returns once all ranks have joined, with the last one in
/// `*last_rank` (if not NULL).
///
/// # Safety
/// `last_rank` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hora_join(last_rank: *mut c_int) -> hora_status {
    guard(|| {
        let last = hora_core::join()?;
        if !last_rank.is_null() {
            // SAFETY: the caller passes NULL or a writable int.
            unsafe { *last_rank = last as c_int };
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::{hora_dtype, hora_op, hora_status, status_of};
    use hora_core::{DataType, Error, ReduceOp};

    const DTYPES: [hora_dtype; 11] = [
        hora_dtype::U8,
        hora_dtype::I8,
        hora_dtype::I32,
        hora_dtype::I64,
        hora_dtype::F16,
        hora_dtype::Bf16,
        hora_dtype::F32,
        hora_dtype::F64,
        hora_dtype::I16,
        hora_dtype::U16,
        hora_dtype::Bool,
    ];
    const OPS: [hora_op; 6] = [
        hora_op::Average,
        hora_op::Sum,
        hora_op::Adasum,
        hora_op::Min,
        hora_op::Max,
        hora_op::Product,
    ];

    /// C callers, Python and the engine share one numbering: each C value is the engine's code
    /// for the value it converts to, and every engine code has its C value.
    #[test]
    fn c_enum_values_are_the_engine_codes() {
        for d in DTYPES {
            assert_eq!(d as u8, DataType::from(d).code(), "{d:?}");
        }
        for o in OPS {
            assert_eq!(o as u8, ReduceOp::from(o).code(), "{o:?}");
        }
        let dtype_codes: Vec<u8> = (0..=u8::MAX)
            .filter(|&c| DataType::from_code(c).is_some())
            .collect();
        assert_eq!(dtype_codes, DTYPES.map(|d| d as u8));
        let op_codes: Vec<u8> = (0..=u8::MAX)
            .filter(|&c| ReduceOp::from_code(c).is_some())
            .collect();
        assert_eq!(op_codes, OPS.map(|o| o as u8));
    }

    #[test]
    fn rendezvous_failures_have_their_own_status() {
        let e = Error::Rendezvous {
            rank: 1,
            detail: "store unreachable".into(),
        };
        assert_eq!(status_of(&e), hora_status::Rendezvous);
        let e = Error::NotLaunched { hint: "-".into() };
        assert_eq!(status_of(&e), hora_status::NotLaunched);
    }
}
