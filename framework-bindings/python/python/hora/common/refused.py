"""Names Horovod has that hora deliberately does not provide: using one raises an error that says
why and what to use instead (never a silent no-op)."""


def elastic_getattr(module):
    """A module ``__getattr__`` for ``<module>.elastic``: every public name raises."""

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise NotImplementedError(
            f"{module}.{name}: elastic training (Horovod's hvd.elastic: run, the State classes and the "
            "elastic callbacks) is not implemented in hora; run a fixed set of ranks with horovodrun and "
            "resume a failed job from a checkpoint")

    return __getattr__
