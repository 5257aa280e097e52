"""Topology as tensors (``rank_op``, ``size_op``...) and Horovod's small op helpers."""

import warnings

import tensorflow as tf

from hora.common.basics import local_rank, local_size
from hora.common.process_sets import _id_rank, _id_size, _only_global, _set_id
from hora.common.vocabulary import Average, Sum


def _graph_mode():
    return not tf.executing_eagerly()


def handle_average_backwards_compatibility(op, average):
    """The reduce op for Horovod's ``op`` and deprecated ``average`` arguments: ``op`` when
    given (giving both is a ValueError), else Average or Sum from ``average`` (with a
    DeprecationWarning), else Average."""
    if op is not None:
        if average is not None:
            raise ValueError("The op parameter supersedes average. Please provide only one of them.")
        return op
    if average is not None:
        warnings.warn("Parameter `average` has been replaced with `op` and will be removed in v1.0",
                      DeprecationWarning, stacklevel=2)
        return Average if average else Sum
    return Average


def check_num_rank_power_of_2(num_rank):
    """Whether ``num_rank`` is a power of two (Horovod's check before a tf.compat.v1 Adasum)."""
    return num_rank != 0 and (num_rank & (num_rank - 1)) == 0


def _runtime_int(value, name):
    """An int32 scalar tensor of ``value()``: eagerly its current value; in a graph an op that
    calls ``value`` each time it runs, so a traced function never returns a value frozen at
    trace time. Not ordered with the collectives: it waits on no other rank."""
    if not _graph_mode():
        return tf.constant(value(), tf.int32)
    with tf.name_scope(name or "hora_topology"):
        out = tf.py_function(lambda: tf.constant(value(), tf.int32), [], [tf.int32])[0]
    out.set_shape([])
    return out


def size_op(process_set=None, name=None):
    """The number of ranks (of ``process_set``), as an int32 scalar tensor (in a tf.function,
    read when the op runs)."""
    _set_id(process_set, "hora.tensorflow.size_op")
    return _runtime_int(lambda: _id_size(_set_id(process_set, "hora.tensorflow.size_op")), name)


def rank_op(process_set=None, name=None):
    """This rank (inside ``process_set``), as an int32 scalar tensor (in a tf.function, read
    when the op runs)."""
    _set_id(process_set, "hora.tensorflow.rank_op")
    return _runtime_int(lambda: _id_rank(_set_id(process_set, "hora.tensorflow.rank_op")), name)


def process_set_included_op(process_set=None, name=None):
    """1 if this rank is in ``process_set`` (default: the global set), else 0, as an int32
    scalar tensor (in a tf.function, read when the op runs)."""
    _set_id(process_set, "hora.tensorflow.process_set_included_op")

    def value():
        ps = _set_id(process_set, "hora.tensorflow.process_set_included_op")
        return int(ps == 0 or process_set.included())

    return _runtime_int(value, name)


def local_size_op(process_set=None, name=None):
    """The number of ranks on this host, as an int32 scalar tensor (read when the op runs)."""
    _only_global(process_set, "hora.tensorflow.local_size_op")
    return _runtime_int(local_size, name)


def local_rank_op(process_set=None, name=None):
    """This rank's index on its host, as an int32 scalar tensor (read when the op runs)."""
    _only_global(process_set, "hora.tensorflow.local_rank_op")
    return _runtime_int(local_rank, name)
