"""Process sets (Horovod's ``hvd.ProcessSet``): collectives among a subset of the job's ranks.

Every set is known on every rank, with the same id (0 for the global set). A set is added
collectively: every rank calls ``add_process_set`` with the same ranks, in the same order, or
passes the same list to ``init(process_sets=...)``; ranks that disagree all get the same error.
"""

from hora import _core
from hora.common.errors import invalid_argument


class ProcessSet:
    """A group of ranks that runs collectives among themselves (``process_set=`` argument).

    ``ranks`` are global ranks; ``process_set_id`` is ``None`` until the set is registered
    (by ``init(process_sets=...)`` or ``add_process_set``).
    """

    def __init__(self, ranks_or_comm):
        if hasattr(ranks_or_comm, "Get_group"):
            raise invalid_argument("hora.ProcessSet: an MPI communicator is not supported; give a list of ranks")
        try:
            ranks = [int(r) for r in ranks_or_comm]
        except TypeError:
            raise invalid_argument("hora.ProcessSet: expected a list of ranks, got "
                                   f"{type(ranks_or_comm).__name__}") from None
        self.ranks = sorted(ranks)
        self.process_set_id = None

    def _registered(self, what):
        if self.process_set_id is None:
            raise invalid_argument(f"{what}: process set {self.ranks} is not registered (pass it to "
                                   "init(process_sets=...) or add_process_set first)")
        return self.process_set_id

    def size(self):
        """Number of ranks in the set (None before it is registered and hora initialized)."""
        if self.process_set_id is None or not _core.is_initialized():
            return None
        return len(self.ranks)

    def rank(self):
        """This process's rank inside the set (None when not a member or not registered)."""
        if self.process_set_id is None or not _core.is_initialized():
            return None
        me = _core.topology()[0]
        return self.ranks.index(me) if me in self.ranks else None

    def included(self):
        """Whether this process is a member (None before it is registered)."""
        if self.process_set_id is None or not _core.is_initialized():
            return None
        return _core.topology()[0] in self.ranks

    def __eq__(self, other):
        return isinstance(other, ProcessSet) and (self.process_set_id, self.ranks) == (
            other.process_set_id, other.ranks)

    def __hash__(self):
        return hash((self.process_set_id, tuple(self.ranks)))

    def __repr__(self):
        return f"ProcessSet(process_set_id={self.process_set_id}, ranks={self.ranks})"


global_process_set = ProcessSet([])
global_process_set.process_set_id = 0


def _refresh_global():
    if _core.is_initialized():
        global_process_set.ranks = list(range(_core.topology()[1]))


def _register_static(process_sets):
    """The rank lists for ``_core.init`` from ``init(process_sets=...)`` (sets or lists)."""
    if process_sets is None:
        return [], []
    sets = [p if isinstance(p, ProcessSet) else ProcessSet(p) for p in process_sets]
    return sets, [s.ranks for s in sets]


def _after_init(static_sets):
    _refresh_global()
    by_ranks = {tuple(ranks): pid for pid, ranks in _core.process_sets()}
    for s in static_sets:
        s.process_set_id = by_ranks.get(tuple(s.ranks))


def add_process_set(process_set):
    """Adds a process set (a ``ProcessSet`` or a list of ranks) and returns it, registered.

    Collective: every rank calls it with the same ranks. Needs HOROVOD_DYNAMIC_PROCESS_SETS=1.
    """
    ps = process_set if isinstance(process_set, ProcessSet) else ProcessSet(process_set)
    if ps.process_set_id is not None:
        raise invalid_argument(f"hora.add_process_set: {ps} is already registered")
    pid, ranks = _core.add_process_set(ps.ranks)
    ps.process_set_id, ps.ranks = pid, list(ranks)
    return ps


def remove_process_set(process_set):
    """Removes a registered process set (collective); returns True once it is gone."""
    pid = process_set._registered("hora.remove_process_set") if isinstance(process_set, ProcessSet) \
        else int(process_set)
    _core.remove_process_set(pid)
    if isinstance(process_set, ProcessSet):
        process_set.process_set_id = None
    return True


def _set_id(process_set, what):
    """The id a collective runs on: None or global_process_set is 0."""
    if process_set is None:
        return 0
    if isinstance(process_set, ProcessSet):
        return process_set._registered(what)
    raise invalid_argument(f"{what}: process_set must be a hora ProcessSet, got {type(process_set).__name__}")


def _set_rank(process_set):
    """This rank's position inside ``process_set`` (None or the global set: the global rank)."""
    return _id_rank(_set_id(process_set, "hora"))


def _set_size(process_set):
    """Number of ranks of ``process_set`` (None: the job's size)."""
    return _id_size(_set_id(process_set, "hora"))


def _only_global(process_set, what):
    """Refuses a process set other than the global one, where a face does not run sets yet."""
    if process_set is None or process_set is global_process_set or (
            isinstance(process_set, ProcessSet) and process_set.process_set_id == 0):
        return
    raise invalid_argument(f"{what}: process_set= other than the global set is not implemented in this "
                           "face yet (hora.torch and the Rust API run process sets); drop the argument to "
                           "use every rank")


def _ranks_of(pid):
    for sid, ranks in _core.process_sets():
        if sid == pid:
            return list(ranks)
    raise invalid_argument(f"hora: there is no process set {pid}")


def _id_rank(pid):
    """This rank's position in process set ``pid`` (0: the job's rank)."""
    me = _core.topology()[0]
    return me if pid == 0 else _ranks_of(pid).index(me)


def _id_size(pid):
    """The number of ranks of process set ``pid`` (0: the job's size)."""
    return _core.topology()[1] if pid == 0 else len(_ranks_of(pid))
