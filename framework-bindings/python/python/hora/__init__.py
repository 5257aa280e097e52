"""hora: distributed training communication (a Horovod-compatible API), written in Rust.

Framework bindings live in sub-packages: ``hora.torch`` (needs PyTorch). This package itself
imports without any framework and offers the process-level calls and the exception classes.
"""

from hora._core import (
    ConfigError,
    HoraError,
    InternalError,
    InvalidArgumentError,
    MismatchError,
    NotInitializedError,
    PeerFailedError,
    RendezvousError,
    ShutDownError,
    WaitTimeoutError,
)
from hora.common.basics import (
    cross_rank,
    cross_size,
    init,
    is_initialized,
    local_rank,
    local_size,
    rank,
    shutdown,
    size,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "HoraError",
    "InternalError",
    "InvalidArgumentError",
    "MismatchError",
    "NotInitializedError",
    "PeerFailedError",
    "RendezvousError",
    "ShutDownError",
    "WaitTimeoutError",
    "cross_rank",
    "cross_size",
    "init",
    "is_initialized",
    "local_rank",
    "local_size",
    "rank",
    "shutdown",
    "size",
]
