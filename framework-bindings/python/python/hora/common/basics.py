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


def mpi_threads_supported():
    """Horovod compatibility: hora does not use MPI, so this is False."""
    return False


def mpi_enabled():
    """Horovod compatibility: the MPI controller is not built in."""
    return False


def gloo_enabled():
    """Horovod compatibility: hora's TCP controller plays Gloo's role."""
    return True


def nccl_built():
    """Horovod compatibility: no NCCL support yet."""
    return False
