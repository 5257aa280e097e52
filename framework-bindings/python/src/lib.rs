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
use pyo3::types::PyDict;

use crate::error::{HoraError, to_py};
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

/// `{name: code}` for every value of a stable-coded enum, in code order: what `_core` exports
/// as `DTYPES`, `OPS` and `KINDS`, so Python (`hora/common/vocabulary.py`) never writes a code
/// of its own.
fn codes<'py, T: Copy>(
    py: Python<'py>,
    all: &[T],
    code: fn(T) -> u8,
    name: fn(T) -> &'static str,
) -> PyResult<Bound<'py, PyDict>> {
    let mut by_code = all.to_vec();
    by_code.sort_by_key(|&v| code(v));
    let table = PyDict::new(py);
    for v in by_code {
        table.set_item(name(v), code(v))?;
    }
    Ok(table)
}

/// Reads a code sent by the Python layer; an unknown one is the caller's mistake.
fn decode<T>(code: i64, from_code: fn(u8) -> Option<T>) -> Option<T> {
    u8::try_from(code).ok().and_then(from_code)
}

/// The `InvalidArgumentError` for a mistake `_core` itself finds, worded as the engine's own.
fn invalid(py: Python<'_>, rank: usize, name: &str, detail: String) -> PyErr {
    to_py(
        py,
        &hora::Error::InvalidArgument {
            rank,
            tensor: name.to_string(),
            detail,
        },
    )
}

/// Starts hora from the launcher's environment (a no-op when already running), with the
/// process sets (global rank lists) every rank names in the same order.
#[pyfunction]
#[pyo3(signature = (*, process_sets=Vec::new()))]
fn init(py: Python<'_>, process_sets: Vec<Vec<usize>>) -> PyResult<()> {
    ensure_not_forked()?;
    install_fork_hook();
    py.detach(|| {
        hora::config::Config::from_env()
            .and_then(|c| hora::api::init_with_process_sets(c, &process_sets))
    })
    .map_err(|e| to_py(py, &e))
}

/// Adds a process set of these global ranks (collective); returns `(id, sorted ranks)`.
#[pyfunction]
fn add_process_set(py: Python<'_>, ranks: Vec<usize>) -> PyResult<(u32, Vec<usize>)> {
    ensure_not_forked()?;
    let set = py
        .detach(|| hora::api::add_process_set(&ranks))
        .map_err(|e| to_py(py, &e))?;
    Ok((set.id, set.ranks))
}

/// Removes process set `id` (collective).
#[pyfunction]
fn remove_process_set(py: Python<'_>, id: u32) -> PyResult<()> {
    ensure_not_forked()?;
    py.detach(|| hora::api::remove_process_set(id))
        .map_err(|e| to_py(py, &e))
}

/// Starts (or moves) rank 0's timeline to `path`; needs HOROVOD_TIMELINE set at start.
#[pyfunction]
#[pyo3(signature = (path, mark_cycles=false))]
fn start_timeline(py: Python<'_>, path: std::path::PathBuf, mark_cycles: bool) -> PyResult<()> {
    ensure_not_forked()?;
    hora::api::start_timeline(&path, mark_cycles).map_err(|e| to_py(py, &e))
}

/// Stops rank 0's timeline (a no-op when none is open).
#[pyfunction]
fn stop_timeline(py: Python<'_>) -> PyResult<()> {
    ensure_not_forked()?;
    hora::api::stop_timeline().map_err(|e| to_py(py, &e))
}

/// Whether every host runs the same number of ranks.
#[pyfunction]
fn is_homogeneous(py: Python<'_>) -> PyResult<bool> {
    ensure_not_forked()?;
    hora::api::is_homogeneous().map_err(|e| to_py(py, &e))
}

/// `(backend name, built)` for every backend hora knows, from the build itself.
#[pyfunction]
fn backends() -> Vec<(&'static str, bool)> {
    hora::build_info()
        .backends
        .iter()
        .map(|b| (b.name, b.built))
        .collect()
}

/// The backend this process runs on (`tcp`, `shm`, `tcp+shm hierarchical`, `mpi`, `local`).
#[pyfunction]
fn transport_name(py: Python<'_>) -> PyResult<&'static str> {
    hora::api::transport_name().map_err(|e| to_py(py, &e))
}

/// Every process set of the job as `(id, ranks)`, the global set first.
#[pyfunction]
fn process_sets(py: Python<'_>) -> PyResult<Vec<(u32, Vec<usize>)>> {
    ensure_not_forked()?;
    let sets = hora::api::process_sets().map_err(|e| to_py(py, &e))?;
    Ok(sets.into_iter().map(|s| (s.id, s.ranks)).collect())
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
/// Keyword-only. `kind`, `dtype` and `op` are codes from `KINDS`, `DTYPES` and `OPS`. `owner`
/// keeps the memory at `ptr` (`nbytes` long, contiguous, CPU) alive until the handle
/// completes; barrier and join pass no owner. `process_set` is a set's id (0: every rank);
/// `root` is a global rank, a member of that set.
#[pyfunction]
#[pyo3(signature = (
    *, kind, name, dtype, shape, owner=None, ptr=0, nbytes=0, op=ReduceOp::Average.code().into(),
    root=0, prescale=1.0,
    postscale=1.0, splits=Vec::new(), process_set=0
))]
#[allow(clippy::too_many_arguments)]
fn enqueue(
    py: Python<'_>,
    kind: i64,
    name: &str,
    dtype: i64,
    shape: Vec<u64>,
    owner: Option<Py<PyAny>>,
    ptr: usize,
    nbytes: usize,
    op: i64,
    root: i64,
    prescale: f64,
    postscale: f64,
    splits: Vec<i64>,
    process_set: u32,
) -> PyResult<PyHandle> {
    ensure_not_forked()?;
    let engine = hora::api::engine_for(process_set).map_err(|e| to_py(py, &e))?;
    let rank = hora::api::rank().map_err(|e| to_py(py, &e))?;
    let bad = |detail: String| invalid(py, rank, name, detail);
    let kind = decode(kind, CollectiveKind::from_code)
        .ok_or_else(|| bad(format!("unknown collective code {kind}")))?;
    let dtype = decode(dtype, DataType::from_code)
        .ok_or_else(|| bad(format!("unknown dtype code {dtype}")))?;
    let op = decode(op, ReduceOp::from_code)
        .ok_or_else(|| bad(format!("unknown reduce op code {op}")))?;
    let root = usize::try_from(root).map_err(|_| {
        bad(format!(
            "broadcast root {root} is not a rank of this job (size {})",
            hora::api::size().unwrap_or(0)
        ))
    })?;
    // The set's own numbering; only a broadcast has a root to check.
    let root = if process_set != 0 && kind == CollectiveKind::Broadcast {
        hora::api::set_rank(process_set, root, name).map_err(|e| to_py(py, &e))?
    } else {
        root
    };
    let splits = splits
        .iter()
        .map(|&s| u64::try_from(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(format!("alltoall splits {splits:?} must not be negative")))?;
    let op = Op::new(kind, name, dtype, &shape)
        .reduce_op(op)
        .root(root)
        .scales(prescale, postscale)
        .splits(splits);
    let data: Option<Box<dyn hora::TensorData>> = match owner {
        Some(owner) => Some(Box::new(
            LentTensor::new(owner, ptr, nbytes)
                .ok_or_else(|| bad(format!("null data pointer for {nbytes} bytes")))?,
        )),
        None if nbytes != 0 => return Err(bad(format!("{nbytes} bytes but no owner"))),
        None => None,
    };
    Ok(PyHandle::new(engine.submit(op, data)))
}

/// One member of [`enqueue_group`]: `(name, dtype code, shape, owner, data pointer, bytes)`.
type Member = (String, i64, Vec<u64>, Py<PyAny>, usize, usize);

/// Submits several tensors of one collective as one group (Horovod's grouped operations) and
/// returns one handle per member, in order; the engine negotiates and fuses them as a unit,
/// and every rank must group the same names.
///
/// Keyword-only. `kind` and `op` are codes as for `enqueue` (allreduce, allgather or
/// reducescatter); each member is `(name, dtype, shape, owner, ptr, nbytes)` with a lent
/// contiguous CPU buffer as for `enqueue`. A bad member raises before anything is queued.
#[pyfunction]
#[pyo3(signature = (
    *, kind, members, op=ReduceOp::Average.code().into(), prescale=1.0, postscale=1.0,
    process_set=0
))]
fn enqueue_group(
    py: Python<'_>,
    kind: i64,
    members: Vec<Member>,
    op: i64,
    prescale: f64,
    postscale: f64,
    process_set: u32,
) -> PyResult<Vec<PyHandle>> {
    ensure_not_forked()?;
    let engine = hora::api::engine_for(process_set).map_err(|e| to_py(py, &e))?;
    let rank = hora::api::rank().map_err(|e| to_py(py, &e))?;
    let first = members.first().map_or("<empty group>", |m| m.0.as_str());
    let kind = decode(kind, CollectiveKind::from_code)
        .filter(|k| {
            matches!(
                k,
                CollectiveKind::Allreduce | CollectiveKind::Allgather | CollectiveKind::Reducescatter
            )
        })
        .ok_or_else(|| {
            invalid(
                py,
                rank,
                first,
                format!("collective code {kind} cannot be grouped (allreduce, allgather or reducescatter)"),
            )
        })?;
    let op = decode(op, ReduceOp::from_code)
        .ok_or_else(|| invalid(py, rank, first, format!("unknown reduce op code {op}")))?;
    let mut ops = Vec::with_capacity(members.len());
    for (name, dtype, shape, owner, ptr, nbytes) in members {
        let dtype = decode(dtype, DataType::from_code)
            .ok_or_else(|| invalid(py, rank, &name, format!("unknown dtype code {dtype}")))?;
        let data: Box<dyn hora::TensorData> =
            Box::new(LentTensor::new(owner, ptr, nbytes).ok_or_else(|| {
                invalid(
                    py,
                    rank,
                    &name,
                    format!("null data pointer for {nbytes} bytes"),
                )
            })?);
        let op = Op::new(kind, name, dtype, &shape)
            .reduce_op(op)
            .scales(prescale, postscale);
        ops.push((op, Some(data)));
    }
    Ok(engine
        .submit_group(ops)
        .into_iter()
        .map(PyHandle::new)
        .collect())
}

/// Declares this rank done and waits (interruptibly) until every rank has; returns the last
/// rank to join.
#[pyfunction]
fn join(py: Python<'_>) -> PyResult<usize> {
    let h = engine(py)?.submit(Op::join(), None);
    let c = wait_interruptible(py, h, None, drop)?;
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
    m.add_function(wrap_pyfunction!(enqueue_group, m)?)?;
    m.add_function(wrap_pyfunction!(join, m)?)?;
    m.add_function(wrap_pyfunction!(add_process_set, m)?)?;
    m.add_function(wrap_pyfunction!(remove_process_set, m)?)?;
    m.add_function(wrap_pyfunction!(process_sets, m)?)?;
    m.add_function(wrap_pyfunction!(start_timeline, m)?)?;
    m.add_function(wrap_pyfunction!(stop_timeline, m)?)?;
    m.add_function(wrap_pyfunction!(is_homogeneous, m)?)?;
    m.add_function(wrap_pyfunction!(backends, m)?)?;
    m.add_function(wrap_pyfunction!(transport_name, m)?)?;
    let py = m.py();
    m.add(
        "DTYPES",
        codes(py, &DataType::ALL, DataType::code, DataType::name)?,
    )?;
    m.add(
        "OPS",
        codes(py, &ReduceOp::ALL, ReduceOp::code, ReduceOp::name)?,
    )?;
    m.add(
        "KINDS",
        codes(
            py,
            &CollectiveKind::ALL,
            CollectiveKind::code,
            CollectiveKind::name,
        )?,
    )?;
    Ok(())
}
