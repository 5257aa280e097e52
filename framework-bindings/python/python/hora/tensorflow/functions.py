"""Whole-model helpers: broadcast variables and Python objects."""

import io
import itertools
import pickle

import numpy as np
import tensorflow as tf

from hora.common.process_sets import _set_id
from hora.common.basics import rank
from hora.common.errors import invalid_argument
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


def _eager_only(session, what):
    if not tf.executing_eagerly():
        raise invalid_argument(f"hora.tensorflow.{what}: runs eagerly only; in a tf.compat.v1 graph use "
                               "broadcast_object_fn(session=...), which runs its ops in the session")
    if session is not None:
        raise invalid_argument(f"hora.tensorflow.{what}: session= is for tf.compat.v1 graphs; it has no "
                               "meaning eagerly (drop it)")


def broadcast_object(obj, root_rank=0, session=None, name=None, process_set=None):
    """Returns ``root_rank``'s ``obj`` (any picklable object) on every rank (eager only;
    ``broadcast_object_fn`` serves tf.compat.v1 sessions)."""
    _set_id(process_set, "hora.tensorflow.broadcast_object")
    _eager_only(session, "broadcast_object")
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


def allgather_object(obj, session=None, name=None, process_set=None):
    """Returns the list of every rank's ``obj``, in rank order (eager only)."""
    _set_id(process_set, "hora.tensorflow.allgather_object")
    _eager_only(session, "allgather_object")
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


def broadcast_object_fn(root_rank=0, session=None, name=None, process_set=None):
    """A function ``f(obj)`` returning ``root_rank``'s ``obj`` on every rank, callable many times.

    Eagerly it is ``broadcast_object``. Built in a tf.compat.v1 graph, it makes the broadcast
    ops once (fed through placeholders) and runs them in ``session`` (default: the default
    session at build time), as Horovod's does.
    """
    _set_id(process_set, "hora.tensorflow.broadcast_object_fn")
    name = name or "broadcast_object_fn"
    if tf.executing_eagerly():
        if session is not None:
            raise invalid_argument("hora.tensorflow.broadcast_object_fn: session= is for tf.compat.v1 graphs; "
                                   "it has no meaning eagerly (drop it)")
        return lambda obj: broadcast_object(obj, root_rank, name=name, process_set=process_set)
    graph = tf.compat.v1.get_default_graph()
    size_in = tf.compat.v1.placeholder(tf.int64, [1], name="bcast_object_size")
    # Each op is run on its own by session.run, so neither may wait on the graph's other hora
    # ops (the program-order chain would make the data broadcast need the size feed too).
    mpi_ops._last_op.pop(graph, None)
    size_out = mpi_ops.broadcast(size_in, root_rank, name=f"{name}.sz", process_set=process_set)
    data_in = tf.compat.v1.placeholder(tf.uint8, [None], name="bcast_object_data")
    mpi_ops._last_op.pop(graph, None)
    data_out = mpi_ops.broadcast(data_in, root_rank, name=f"{name}.t", process_set=process_set)
    mpi_ops._last_op.pop(graph, None)
    session = session or tf.compat.v1.get_default_session()
    if session is None:
        raise invalid_argument("hora.tensorflow.broadcast_object_fn: no session= and no default session to run "
                               "the broadcast in (call it inside `with tf.compat.v1.Session() as sess:` or pass "
                               "session=)")

    def bcast(obj):
        if rank() == root_rank:
            payload = np.frombuffer(_pickler.dumps(obj), dtype=np.uint8)
            session.run(size_out, feed_dict={size_in: [payload.size]})
        else:
            n = int(session.run(size_out, feed_dict={size_in: [0]})[0])
            payload = np.zeros([n], np.uint8)
        got = session.run(data_out, feed_dict={data_in: payload})
        return obj if rank() == root_rank else pickle.loads(got.tobytes())

    return bcast


def broadcast_global_variables(root_rank):
    """Broadcasts every tf.compat.v1 global variable of the current graph from ``root_rank``;
    returns the group of assign ops to run. TF1 graphs only: eagerly it raises RuntimeError,
    as Horovod does (use ``broadcast_variables`` with the model's variables)."""
    if tf.executing_eagerly():
        raise RuntimeError("hora.tensorflow.broadcast_global_variables() does not support eager execution (there "
                           "is no global variable collection); use hvd.broadcast_variables(<model/optimizer "
                           "variables>, root_rank) instead")
    return broadcast_variables(tf.compat.v1.global_variables(), root_rank)


class BroadcastGlobalVariablesHook(tf.compat.v1.train.SessionRunHook):
    """A tf.compat.v1 ``SessionRunHook`` (``MonitoredSession``, ``MonitoredTrainingSession``)
    that broadcasts every global variable from ``root_rank`` once the session is created, so
    every rank starts from the same (initialized or restored) values. ``device`` is accepted
    and unused (hora runs on the CPU)."""

    def __init__(self, root_rank, device=""):
        super().__init__()
        self.root_rank = root_rank
        self.device = device
        self.bcast_op = None

    def begin(self):
        """Builds the broadcast in the graph being finalized (again if it is a new graph)."""
        if self.bcast_op is None or self.bcast_op.graph is not tf.compat.v1.get_default_graph():
            self.bcast_op = broadcast_global_variables(self.root_rank)

    def after_create_session(self, session, coord):
        """Runs the broadcast."""
        if self.bcast_op is not None:
            session.run(self.bcast_op)
