//! The one mapping table from `hora::Error` to Python exceptions.
//!
//! Every exception is a subclass of `hora.HoraError` and carries `rank`, `tensor_name` and
//! `cause` attributes (None when the error has no such part), so handlers need not parse text.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::{PyErr, Python, create_exception};

create_exception!(
    hora,
    HoraError,
    PyException,
    "Base class of every error hora raises."
);
create_exception!(
    hora,
    ConfigError,
    HoraError,
    "The launch environment or a setting is unusable."
);
create_exception!(
    hora,
    NotInitializedError,
    HoraError,
    "hora.init() has not been called (or shutdown() was)."
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
    InvalidArgumentError,
    HoraError,
    "A call's arguments are invalid (size, duplicate name, root, splits)."
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

/// Builds the Python exception for `err`, with its structured parts as attributes.
pub(crate) fn to_py(py: Python<'_>, err: &hora::Error) -> PyErr {
    use hora::Error as E;
    let msg = err.to_string();
    let (py_err, rank, tensor): (PyErr, Option<usize>, Option<String>) = match err {
        E::NotLaunched { .. } | E::InvalidConfig { .. } => {
            (ConfigError::new_err(msg.clone()), None, None)
        }
        E::NotInitialized => (NotInitializedError::new_err(msg.clone()), None, None),
        E::Mismatch { rank, tensor, .. } => (
            MismatchError::new_err(msg.clone()),
            Some(*rank),
            Some(tensor.clone()),
        ),
        E::Transport { rank, tensor, .. } => (
            PeerFailedError::new_err(msg.clone()),
            Some(*rank),
            Some(tensor.clone()),
        ),
        E::ShutDown { rank, .. } => (ShutDownError::new_err(msg.clone()), Some(*rank), None),
        E::InvalidArgument { rank, tensor, .. } => (
            InvalidArgumentError::new_err(msg.clone()),
            Some(*rank),
            Some(tensor.clone()),
        ),
        E::Rendezvous { rank, .. } => (RendezvousError::new_err(msg.clone()), Some(*rank), None),
        E::WaitTimeout { tensor } => (
            InternalError::new_err(msg.clone()),
            None,
            Some(tensor.clone()),
        ),
        _ => (InternalError::new_err(msg.clone()), None, None),
    };
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
    m.add("HoraError", py.get_type::<HoraError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("NotInitializedError", py.get_type::<NotInitializedError>())?;
    m.add("MismatchError", py.get_type::<MismatchError>())?;
    m.add("PeerFailedError", py.get_type::<PeerFailedError>())?;
    m.add("ShutDownError", py.get_type::<ShutDownError>())?;
    m.add(
        "InvalidArgumentError",
        py.get_type::<InvalidArgumentError>(),
    )?;
    m.add("RendezvousError", py.get_type::<RendezvousError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    Ok(())
}
