"""Horovod names hora does not have yet: each is refused with why and what to use instead."""

_ELASTIC = (
    "{face}.elastic: hora has no elastic training yet (a job whose workers join and leave while it "
    "runs, Horovod's hvd.elastic.run / --min-np / --host-discovery-script); run a fixed-size job "
    "(horovodrun -np N) and restart it from a checkpoint to change its size"
)


def elastic_message(face):
    """Why ``<face>.elastic`` is refused."""
    return _ELASTIC.format(face=face)


def module_getattr(face):
    """A module ``__getattr__`` for ``face`` that refuses the names above with their reasons."""

    def __getattr__(name):
        if name == "elastic":
            raise AttributeError(elastic_message(face))
        raise AttributeError(f"module {face!r} has no attribute {name!r}")

    return __getattr__
