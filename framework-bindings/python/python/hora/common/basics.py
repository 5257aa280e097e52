"""Process-level calls shared by every framework binding: init, shutdown, topology."""

import atexit

from hora import _core
from hora.common import process_sets as process_sets_mod

_topology = None
_atexit_registered = False


def init(comm=None, process_sets=None):
    """Starts hora from the launcher's environment (``horovodrun`` sets it).

    ``process_sets``: ``ProcessSet`` objects (or rank lists) every rank names in the same
    order; they are registered with ids 1, 2, ... ``comm`` (an MPI communicator) is refused.
    """
    global _topology, _atexit_registered
    if comm is not None:
        raise ValueError("hora.init: an MPI communicator is not supported; launch with horovodrun")
    sets, lists = process_sets_mod._register_static(process_sets)
    _core.init(process_sets=lists)
    _topology = _core.topology()
    process_sets_mod._after_init(sets)
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True


def shutdown():
    """Stops hora; pending operations fail with ShutDownError. Safe to call twice."""
    global _topology
    _topology = None
    _core.shutdown()


def is_initialized():
    """True between init() and shutdown()."""
    return _core.is_initialized()


def _topo():
    if _topology is None or not _core.is_initialized():
        # Raises NotInitializedError (or the fork error) with a clear message.
        return _core.topology()
    return _topology


def rank():
    """This process's rank, 0..size()-1."""
    return _topo()[0]


def size():
    """Number of ranks in the job."""
    return _topo()[1]


def local_rank():
    """Rank among the processes on this host."""
    return _topo()[2]


def local_size():
    """Number of processes on this host."""
    return _topo()[3]


def cross_rank():
    """Index of this host."""
    return _topo()[4]


def cross_size():
    """Number of hosts."""
    return _topo()[5]


def is_homogeneous():
    """True if every host runs the same number of ranks (decided at init)."""
    return _core.is_homogeneous()


def start_timeline(file_path, mark_cycles=False):
    """Starts (or moves) the timeline that rank 0 writes to ``file_path``; ``mark_cycles``
    also marks each coordinator round. Needs HOROVOD_TIMELINE set when the job starts (a
    path, or DYNAMIC to write nothing until this call), as in Horovod."""
    _core.start_timeline(str(file_path), bool(mark_cycles))


def stop_timeline():
    """Stops the timeline and closes its file (nothing happens when none is open)."""
    _core.stop_timeline()


def _built(name):
    return dict(_core.backends()).get(name, False)


def mpi_threads_supported():
    """Horovod compatibility: hora's MPI backend is not started with MPI_THREAD_MULTIPLE for
    the caller's use, so this is False."""
    return False


def mpi_built():
    """True if this build has the MPI backend (hora built with ``--features mpi``)."""
    return _built("mpi")


def mpi_enabled():
    """True if this job runs on the MPI backend (started by mpirun with MPI built in)."""
    return _core.is_initialized() and _core.transport_name() == "mpi"


def gloo_built():
    """True: hora's TCP controller, which plays Gloo's role, is always built (there is no
    Gloo library in hora)."""
    return _built("tcp")


def gloo_enabled():
    """True if this job runs on hora's TCP controller (Gloo's role), i.e. not on MPI."""
    return _core.is_initialized() and _core.transport_name() != "mpi"


def nccl_built():
    """False: hora has no NCCL support yet (GPU tensors are not supported)."""
    return _built("nccl")


def ccl_built():
    """False: hora has no oneCCL support."""
    return False


def cuda_built():
    """False: hora has no CUDA support yet (GPU tensors are not supported)."""
    return False


def rocm_built():
    """False: hora has no ROCm support."""
    return False


def ddl_built():
    """False: hora has no IBM DDL support."""
    return False
