//! The one mapping table from `hora::Error` to Python exceptions.
//!
//! Every exception is a subclass of `hora.HoraError` and carries `rank`, `tensor_name` and
//! `cause` attributes (None when the error has no such part), so handlers need not parse text.
//! `HoraError` is a `RuntimeError`, as Horovod's errors are (`HorovodInternalError` and the
//! C++ failures it wraps), so code written `except RuntimeError:` catches hora's too. Three
//! also derive from the builtin a Python caller would catch: `InvalidArgumentError` from
//! `ValueError` and `TypeError` (the faces raise it for every caller mistake, including the
//! wrong-type ones that were `TypeError` before), `NotInitializedError` from `ValueError`
//! (Horovod raises ValueError before `init`), `WaitTimeoutError` from `TimeoutError`.

use pyo3::exceptions::{PyException, PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::{PyErr, Python, create_exception};

create_exception!(
    hora,
    HoraError,
    PyRuntimeError,
    "Base class of every error hora raises (a RuntimeError, as Horovod's are)."
);
create_exception!(
    hora,
    ConfigError,
    HoraError,
    "The launch environment or a setting is unusable."
);
create_exception!(
    hora,
    MismatchError,
    HoraError,
    "Ranks submitted the same tensor name with different parameters."
);
create_exception!(
    hora,
    PeerFailedError,
    HoraError,
    "Moving bytes failed: a peer died, a connection broke, or a deadline passed."
);
create_exception!(
    hora,
    ShutDownError,
    HoraError,
    "hora is shut down, here or because another rank stopped."
);
create_exception!(
    hora,
    RendezvousError,
    HoraError,
    "Finding the other ranks failed."
);
create_exception!(
    hora,
    InternalError,
    HoraError,
    "An internal invariant broke (a hora bug)."
);

/// A class with a builtin base as well as `HoraError`. `create_exception!` allows one base
/// only, so these are made with `type(name, bases, namespace)` on first use.
struct MixedClass {
    cell: PyOnceLock<Py<PyType>>,
    name: &'static str,
    doc: &'static str,
    builtins: fn(Python<'_>) -> Vec<Bound<'_, PyType>>,
}

impl MixedClass {
    fn get<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyType>> {
        let ty = self.cell.get_or_try_init(py, || {
            let mut bases = vec![py.get_type::<HoraError>()];
            bases.extend((self.builtins)(py));
            let namespace = PyDict::new(py);
            namespace.set_item("__doc__", self.doc)?;
            namespace.set_item("__module__", "hora")?;
            // Exception's own __init__ (the builtin bases would otherwise provide theirs): code
            // that re-creates an exception only when `type(e).__init__ is Exception.__init__`
            // (TensorFlow's autograph, for errors raised while tracing a tf.function) keeps
            // the class instead of replacing it.
            let init = py.get_type::<PyException>().getattr("__init__")?;
            namespace.set_item("__init__", init)?;
            let made =
                py.get_type::<PyType>()
                    .call1((self.name, PyTuple::new(py, bases)?, namespace))?;
            PyResult::Ok(made.cast_into::<PyType>()?.unbind())
        })?;
        Ok(ty.bind(py).clone())
    }
}

/// `hora.InvalidArgumentError`.
static INVALID_ARGUMENT: MixedClass = MixedClass {
    cell: PyOnceLock::new(),
    name: "InvalidArgumentError",
    doc: "A call's arguments are invalid (dtype, size, duplicate name, root, splits, op); \
          also a ValueError and a TypeError.",
    builtins: |py| vec![py.get_type::<PyValueError>(), py.get_type::<PyTypeError>()],
};

/// `hora.NotInitializedError`.
static NOT_INITIALIZED: MixedClass = MixedClass {
    cell: PyOnceLock::new(),
    name: "NotInitializedError",
    doc: "hora.init() has not been called (or shutdown() was); also a ValueError, as \
          Horovod's is.",
    builtins: |py| vec![py.get_type::<PyValueError>()],
};

/// `hora.WaitTimeoutError`.
static WAIT_TIMEOUT: MixedClass = MixedClass {
    cell: PyOnceLock::new(),
    name: "WaitTimeoutError",
    doc: "A wait passed its timeout; the operation is still running and the handle stays \
          valid. Also a TimeoutError.",
    builtins: |py| vec![py.get_type::<PyTimeoutError>()],
};

/// Builds the Python exception for `err`, with its structured parts as attributes.
pub(crate) fn to_py(py: Python<'_>, err: &hora::Error) -> PyErr {
    use hora::Error as E;
    let (class, rank, tensor): (PyResult<Bound<'_, PyType>>, Option<usize>, Option<&str>) =
        match err {
            E::NotLaunched { .. } | E::InvalidConfig { .. } => {
                (Ok(py.get_type::<ConfigError>()), None, None)
            }
            E::NotInitialized => (NOT_INITIALIZED.get(py), None, None),
            E::Mismatch { rank, tensor, .. } => (
                Ok(py.get_type::<MismatchError>()),
                Some(*rank),
                Some(tensor),
            ),
            E::Transport { rank, tensor, .. } => (
                Ok(py.get_type::<PeerFailedError>()),
                Some(*rank),
                Some(tensor),
            ),
            E::ShutDown { rank, .. } => (Ok(py.get_type::<ShutDownError>()), Some(*rank), None),
            E::InvalidArgument { rank, tensor, .. } => {
                (INVALID_ARGUMENT.get(py), Some(*rank), Some(tensor))
            }
            E::Rendezvous { rank, .. } => (Ok(py.get_type::<RendezvousError>()), Some(*rank), None),
            E::WaitTimeout { tensor } => (WAIT_TIMEOUT.get(py), None, Some(tensor)),
            _ => (Ok(py.get_type::<InternalError>()), None, None),
        };
    let class = match class {
        Ok(c) => c,
        Err(e) => return e,
    };
    let msg = err.to_string();
    let py_err = PyErr::from_type(class, msg.clone());
    let value = py_err.value(py);
    // Setting attributes on a fresh exception instance cannot fail short of memory exhaustion;
    // the message already carries the same facts, so a failure here is not worth masking it.
    let _ = value.setattr("rank", rank);
    let _ = value.setattr("tensor_name", tensor);
    let _ = value.setattr("cause", msg);
    py_err
}

/// Adds the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let base = py.get_type::<HoraError>();
    // Class-level defaults, so an instance the Python layer raises itself (before anything
    // reaches the engine) has the same attributes as one built by `to_py`.
    for attr in ["rank", "tensor_name", "cause"] {
        base.setattr(attr, py.None())?;
    }
    m.add("HoraError", base)?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("NotInitializedError", NOT_INITIALIZED.get(py)?)?;
    m.add("MismatchError", py.get_type::<MismatchError>())?;
    m.add("PeerFailedError", py.get_type::<PeerFailedError>())?;
    m.add("ShutDownError", py.get_type::<ShutDownError>())?;
    m.add("InvalidArgumentError", INVALID_ARGUMENT.get(py)?)?;
    m.add("RendezvousError", py.get_type::<RendezvousError>())?;
    m.add("WaitTimeoutError", WAIT_TIMEOUT.get(py)?)?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    Ok(())
}
