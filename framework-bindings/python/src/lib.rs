//! # hora-python: the native module `hora._core`
//!
//! ## Design overview
//! Glue only: argument conversion, GIL release, handle objects and the error table. The
//! Python package `hora` (in `python/hora`) holds every framework-facing behaviour; this
//! crate never links torch or TensorFlow. A tensor crosses as (owner object, data pointer,
//! byte length, dtype code, shape): the Python layer has already checked that it is a
//! contiguous CPU tensor, and the engine borrows that memory, zero-copy, until the handle
//! completes (`tensor::LentTensor` keeps the owner alive meanwhile).
//!
//! What this crate does *not* do: choose names, convert dtypes, make tensors contiguous,
//! or keep handle tables; the Python layer does that.

mod error;
mod handle;
mod tensor;

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use hora::engine::Op;
use hora::{CollectiveKind, DataType, ReduceOp};
use pyo3::prelude::*;

use crate::error::{HoraError, InvalidArgumentError, to_py};
use crate::handle::{Output, PyHandle, wait_interruptible};
use crate::tensor::LentTensor;

/// Set in a child created by fork(): the engine thread and its sockets belong to the parent.
static FORKED: AtomicBool = AtomicBool::new(false);

extern "C" fn mark_forked() {
    // Only an atomic store: the handler runs in the child right after fork, where only
    // async-signal-safe work is allowed.
    FORKED.store(true, Ordering::SeqCst);
}

fn install_fork_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function that only stores to an atomic;
        // no prepare/parent handlers.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(mark_forked)) };
        if rc != 0 {
            tracing_free_warning("could not register the fork handler; a forked child may hang");
        }
    });
}

fn tracing_free_warning(msg: &str) {
    eprintln!("hora: warning: {msg}");
}

fn ensure_not_forked() -> PyResult<()> {
    if FORKED.load(Ordering::SeqCst) {
        return Err(HoraError::new_err(
            "hora cannot be used in a process forked from an initialized one: the engine \
             thread and its connections belong to the parent (use the 'spawn' start method, \
             or call hora only in the parent)",
        ));
    }
    Ok(())
}

fn engine(py: Python<'_>) -> PyResult<std::sync::Arc<hora::Engine>> {
    ensure_not_forked()?;
    hora::api::engine().map_err(|e| to_py(py, &e))
}

/// Dtype codes shared with `hora/common/_dtypes.py` (position in this list).
const DTYPES: [DataType; 8] = [
    DataType::U8,
    DataType::I8,
    DataType::I32,
    DataType::I64,
    DataType::F16,
    DataType::Bf16,
    DataType::F32,
    DataType::F64,
];

/// Reduce-op codes shared with `hora/common/ops.py`.
const OPS: [ReduceOp; 5] = [
    ReduceOp::Average,
    ReduceOp::Sum,
    ReduceOp::Min,
    ReduceOp::Max,
    ReduceOp::Product,
];

/// Collective codes shared with `hora/common/basics.py`.
const KINDS: [CollectiveKind; 7] = [
    CollectiveKind::Allreduce,
    CollectiveKind::Allgather,
    CollectiveKind::Broadcast,
    CollectiveKind::Alltoall,
    CollectiveKind::Reducescatter,
    CollectiveKind::Barrier,
    CollectiveKind::Join,
];

fn code<T: Copy>(table: &[T], i: usize, what: &str, name: &str) -> PyResult<T> {
    table.get(i).copied().ok_or_else(|| {
        InvalidArgumentError::new_err(format!("tensor '{name}': unknown {what} code {i}"))
    })
}

/// Starts hora from the launcher's environment (a no-op when already running).
#[pyfunction]
fn init(py: Python<'_>) -> PyResult<()> {
    ensure_not_forked()?;
    install_fork_hook();
    py.detach(hora::api::init).map_err(|e| to_py(py, &e))
}

/// Stops hora; pending operations fail with ShutDownError. A no-op when not running, and in
/// a forked child (which must not touch the parent's engine thread).
#[pyfunction]
fn shutdown(py: Python<'_>) {
    if FORKED.load(Ordering::SeqCst) {
        return;
    }
    py.detach(hora::api::shutdown);
}

/// Whether hora is running in this process.
#[pyfunction]
fn is_initialized() -> bool {
    !FORKED.load(Ordering::SeqCst) && hora::api::is_initialized()
}

/// `(rank, size, local_rank, local_size, cross_rank, cross_size)`.
#[pyfunction]
fn topology(py: Python<'_>) -> PyResult<(usize, usize, usize, usize, usize, usize)> {
    let t = engine(py)?.topology();
    Ok((
        t.rank,
        t.size,
        t.local_rank,
        t.local_size,
        t.cross_rank,
        t.cross_size,
    ))
}

/// Submits one collective and returns its handle at once.
///
/// `owner` keeps the memory at `ptr` (`nbytes` long, contiguous, CPU) alive until the handle
/// completes; pass `None` with `ptr == 0` for barrier and join.
#[pyfunction]
#[pyo3(signature = (kind, name, owner, ptr, nbytes, dtype, shape, op=0, root=0, prescale=1.0, postscale=1.0, splits=Vec::new()))]
#[allow(clippy::too_many_arguments)]
fn enqueue(
    py: Python<'_>,
    kind: usize,
    name: &str,
    owner: Option<Py<PyAny>>,
    ptr: usize,
    nbytes: usize,
    dtype: usize,
    shape: Vec<u64>,
    op: usize,
    root: u32,
    prescale: f64,
    postscale: f64,
    splits: Vec<u64>,
) -> PyResult<PyHandle> {
    let engine = engine(py)?;
    let kind = code(&KINDS, kind, "collective", name)?;
    let dtype = code(&DTYPES, dtype, "dtype", name)?;
    let op = code(&OPS, op, "reduce op", name)?;
    let op = Op::new(kind, name, dtype, &shape)
        .reduce_op(op)
        .root(root as usize)
        .scales(prescale, postscale)
        .splits(splits);
    let data: Option<Box<dyn hora::TensorData>> = match owner {
        Some(owner) => Some(Box::new(LentTensor::new(owner, ptr, nbytes).ok_or_else(
            || {
                InvalidArgumentError::new_err(format!(
                    "tensor '{name}': null data pointer for {nbytes} bytes"
                ))
            },
        )?)),
        None => None,
    };
    Ok(PyHandle::new(engine.submit(op, data)))
}

/// Declares this rank done and waits (interruptibly) until every rank has; returns the last
/// rank to join.
#[pyfunction]
fn join(py: Python<'_>) -> PyResult<usize> {
    let h = engine(py)?.submit(Op::join(), None);
    let c = wait_interruptible(py, h, drop)?;
    c.last_joined
        .ok_or_else(|| HoraError::new_err("join completed without naming the last rank"))
}

/// The native half of the `hora` package.
#[pymodule]
#[pyo3(name = "_core")]
fn hora_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    error::register(m)?;
    m.add_class::<PyHandle>()?;
    m.add_class::<Output>()?;
    m.add_function(wrap_pyfunction!(init, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(is_initialized, m)?)?;
    m.add_function(wrap_pyfunction!(topology, m)?)?;
    m.add_function(wrap_pyfunction!(enqueue, m)?)?;
    m.add_function(wrap_pyfunction!(join, m)?)?;
    m.add(
        "DTYPES",
        DTYPES.iter().map(|d| d.name()).collect::<Vec<_>>(),
    )?;
    m.add("OPS", OPS.iter().map(|o| o.name()).collect::<Vec<_>>())?;
    m.add("KINDS", KINDS.iter().map(|k| k.name()).collect::<Vec<_>>())?;
    Ok(())
}
