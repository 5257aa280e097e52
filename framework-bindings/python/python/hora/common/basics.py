"""Process-level calls shared by every framework binding: init, shutdown, topology."""

import atexit

from hora import _core

_topology = None
_atexit_registered = False


def init(comm=None, process_sets=None):
    """Starts hora from the launcher's environment (``horovodrun`` sets it).

    ``comm`` and ``process_sets`` are accepted for Horovod compatibility; only the global
    process set (every rank) is supported.
    """
    global _topology, _atexit_registered
    if comm is not None:
        raise ValueError("hora.init: an MPI communicator is not supported; launch with horovodrun")
    if process_sets not in (None, [], ()):
        raise ValueError("hora.init: process sets other than the global one are not supported yet")
    _core.init()
    _topology = _core.topology()
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
