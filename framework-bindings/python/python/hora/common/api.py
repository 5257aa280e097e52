"""The process-level calls and exception classes that every framework module (``hora.torch``,
``hora.tensorflow``, ``hora.keras``) re-exports with ``from hora.common.api import *``."""

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
    ccl_built,
    cross_rank,
    cross_size,
    cuda_built,
    ddl_built,
    gloo_built,
    gloo_enabled,
    init,
    is_homogeneous,
    is_initialized,
    local_rank,
    local_size,
    mpi_built,
    mpi_enabled,
    mpi_threads_supported,
    nccl_built,
    rank,
    rocm_built,
    shutdown,
    size,
    start_timeline,
    stop_timeline,
)

from hora.common.process_sets import (
    ProcessSet,
    add_process_set,
    global_process_set,
    remove_process_set,
)

# Horovod's name for collective failures; elastic-style handlers catch it.
HorovodInternalError = HoraError

__all__ = [name for name in dir() if not name.startswith("_")]
