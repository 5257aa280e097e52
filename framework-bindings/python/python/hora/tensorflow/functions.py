"""Whole-model helpers: broadcast variables and Python objects."""

import io
import itertools
import pickle

import numpy as np
import tensorflow as tf

from hora.common.process_sets import _set_id
from hora.common.basics import rank
from hora.tensorflow import mpi_ops

try:  # cloudpickle handles lambdas and local classes; plain pickle is the fallback
    import cloudpickle as _pickler
except ImportError:  # pragma: no cover - depends on the environment
    _pickler = pickle

_groups = itertools.count()


def _eager_broadcast_group(values, root, base, ps=0):
    return mpi_ops._eager_group(mpi_ops.BROADCAST, "broadcast_variables", values, base, root=root, ps=ps)


def broadcast_variables(variables, root_rank, process_set=None, inplace=False):
    """Overwrites ``variables`` (tf.Variables or Keras variables) with ``root_rank``'s values.

    Every rank must pass the same variables in the same order. Eagerly the broadcasts are
    submitted together and assigned when all are done; inside a tf.function this returns the
    group of assign ops.
    """
    ps = _set_id(process_set, "hora.tensorflow.broadcast_variables")
    root = mpi_ops._check_root(root_rank, "broadcast_variables")
    variables = list(variables)
    if not variables:
        return None
    if not mpi_ops._graph_mode():
        values = [tf.convert_to_tensor(v) for v in variables]
        outs = _eager_broadcast_group(values, root, f"broadcast_variables.{next(_groups)}", ps)
        for var, out in zip(variables, outs):
            var.assign(out)
        return None
    base = mpi_ops._graph_name("broadcast_variables", None)
    values = [tf.convert_to_tensor(v) for v in variables]
    outs = mpi_ops._py_function(lambda *xs: _eager_broadcast_group(xs, root, base, ps), values,
                                [v.dtype for v in values])
    assigns = []
    for var, out, v in zip(variables, outs, values):
        out.set_shape(v.shape)
        assigns.append(var.assign(out))
    return tf.group(*[a for a in assigns if a is not None])


def broadcast_(variables, root_rank, name=None, process_set=None):
    """Overwrites ``variables`` with ``root_rank``'s values (Horovod's in-place broadcast);
    returns them eagerly, the group of assigns inside a tf.function."""
    variables = list(variables)
    group = broadcast_variables(variables, root_rank, process_set=process_set)
    return variables if group is None else group


def broadcast_object(obj, root_rank=0, name=None, process_set=None):
    """Returns ``root_rank``'s ``obj`` (any picklable object) on every rank (eager only)."""
    _set_id(process_set, "hora.tensorflow.broadcast_object")
    # Not the type of obj: ranks other than the root often pass None, and the name must agree.
    name = name or "broadcast_object"
    if rank() == root_rank:
        buf = io.BytesIO()
        _pickler.dump(obj, buf)
        data = tf.constant(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    else:
        data = tf.zeros([0], tf.uint8)
    length = mpi_ops.broadcast(tf.constant([int(data.shape[0])], tf.int64), root_rank, name=f"{name}.sz",
                               process_set=process_set)
    if rank() != root_rank:
        data = tf.zeros([int(length[0])], tf.uint8)
    data = mpi_ops.broadcast(data, root_rank, name=f"{name}.t", process_set=process_set)
    if rank() == root_rank:
        return obj
    return pickle.loads(data.numpy().tobytes())


def allgather_object(obj, name=None, process_set=None):
    """Returns the list of every rank's ``obj``, in rank order (eager only)."""
    _set_id(process_set, "hora.tensorflow.allgather_object")
    # Not the type of obj: it may differ by rank, and the name must agree.
    name = name or "allgather_object"
    payload = _pickler.dumps(obj)
    data = tf.constant(np.frombuffer(payload, dtype=np.uint8))
    sizes = mpi_ops.allgather(tf.constant([len(payload)], tf.int64), name=f"{name}.sz",
                              process_set=process_set).numpy().tolist()
    gathered = mpi_ops.allgather(data, name=f"{name}.t", process_set=process_set).numpy().tobytes()
    out, off = [], 0
    for n in sizes:
        out.append(pickle.loads(gathered[off : off + n]))
        off += n
    return out
