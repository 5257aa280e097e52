"""Collectives on TensorFlow tensors, with horovod.tensorflow's names and semantics.

Eager mode: the engine works on NumPy views of the tensors' memory. Inputs the engine only
reads (allgather, alltoall, reducescatter) are lent as they are; allreduce and broadcast copy
the input once into a 64-byte-aligned buffer that the engine reduces in place. Results reach
TensorFlow through DLPack without a copy (TensorFlow's kernels need 64-byte-aligned memory,
so an engine-allocated result that is not aligned is copied once).

Graph mode (inside ``tf.function``): each collective is a ``tf.py_function`` that runs the
eager implementation, with the static shape set on its outputs. The collectives of one graph
are chained with control dependencies in the order they were created, so every rank runs them
in the same order (TensorFlow would otherwise run independent ones concurrently, in any
order, and ranks could wait on different tensors). Tensor names in a graph come from the
graph's unique names, fixed at trace time, so they agree across ranks.
"""

import collections
import contextlib
import itertools
import math
import re
import weakref

import numpy as np
import tensorflow as tf
try:
    from tensorflow.python.eager import record as _record
except ImportError:  # TensorFlow < 2.12 kept could_possibly_record in eager.tape
    from tensorflow.python.eager import tape as _record
from tensorflow.python.framework.ops import EagerTensor as _EagerTensor
from tensorflow.python.ops import control_flow_util as _cf_util

from hora import _core
from hora._core import HoraError
from hora.common.process_sets import _id_rank, _id_size, _set_id
from hora.common.basics import rank
from hora.common.errors import invalid_argument
from hora.common.handles import wait_all, wait_all_results
from hora.common.vocabulary import (  # noqa: F401  (Adasum, Max, Min, Product: re-exported)
    ALLGATHER,
    ALLREDUCE,
    ALLTOALL,
    BARRIER,
    BROADCAST,
    DTYPES,
    REDUCESCATTER,
    Adasum,
    Average,
    Max,
    Min,
    Product,
    ReduceOp,
    Sum,
    reduce_op,
)
from hora.tensorflow.compression import Compression

# TensorFlow dtype -> hora dtype name (hora.common.vocabulary.DTYPES gives its code).
_HORA_DTYPES = {
    tf.uint8: "u8",
    tf.int8: "i8",
    tf.int32: "i32",
    tf.int64: "i64",
    tf.float16: "f16",
    tf.bfloat16: "bf16",
    tf.float32: "f32",
    tf.float64: "f64",
    tf.int16: "i16",
    tf.uint16: "u16",
    tf.bool: "bool",
}
_DTYPE_CODES = {dt: DTYPES[name] for dt, name in _HORA_DTYPES.items()}
_NP_DTYPES = {dt: np.dtype(dt.as_numpy_dtype) for dt in _DTYPE_CODES}

# TensorFlow's CPU kernels assume (and CHECK) this alignment of every tensor buffer.
_ALIGN = 64
_from_dlpack = tf.experimental.dlpack.from_dlpack

# Unnamed eager operations are named "tf.<op>.noname.<n>"; only unnamed calls advance n.
_noname = itertools.count()
_barriers = itertools.count()
# graph -> the last hora op created in it (see _py_function).
_last_op = weakref.WeakKeyDictionary()
# Engine errors raised inside py_function ops, for hora_errors(): TensorFlow keeps only their text.
_graph_errors = collections.deque(maxlen=32)


class MismatchError(_core.MismatchError, tf.errors.FailedPreconditionError):
    """A mismatch between ranks, as TensorFlow sees it: Horovod reports one with TensorFlow's
    FAILED_PRECONDITION status, so it is also a ``tf.errors.FailedPreconditionError`` (eagerly
    and from a tf.function), with hora's ``rank``, ``tensor_name`` and ``cause``."""

    def __init__(self, message):
        tf.errors.FailedPreconditionError.__init__(self, None, None, message)
        BaseException.__init__(self, message)


def _tf_error(e):
    """``e`` as TensorFlow code expects it (a mismatch is a FailedPreconditionError)."""
    if isinstance(e, _core.MismatchError) and not isinstance(e, MismatchError):
        t = MismatchError(str(e))
        for attr in ("rank", "tensor_name", "cause"):
            setattr(t, attr, getattr(e, attr, None))
        return t
    return e


def _wait(handle):
    try:
        return handle.wait()
    except _core.MismatchError as e:
        raise _tf_error(e) from None


def _wait_all(handles):
    try:
        wait_all(handles)
    except _core.MismatchError as e:
        raise _tf_error(e) from None


def _wait_all_results(handles):
    try:
        return wait_all_results(handles)
    except _core.MismatchError as e:
        raise _tf_error(e) from None


def _op(average, op):
    return reduce_op(average, op, "hora.tensorflow")


def _code(dtype, what):
    try:
        return _DTYPE_CODES[dtype]
    except KeyError:
        names = ", ".join(d.name for d in _DTYPE_CODES)
        raise invalid_argument(f"hora.tensorflow.{what}: dtype {dtype.name} is not supported "
                               f"(supported: {names})") from None


def _tensor(value, what):
    """Any tensor-like (tf.Tensor, tf.Variable, Keras variable, array) as a tf.Tensor."""
    t = value if isinstance(value, tf.Tensor) else tf.convert_to_tensor(value)
    _code(t.dtype, what)
    return t


def _eager_view(t, what):
    """A NumPy view of an eager tensor's memory (no copy)."""
    if not isinstance(t, _EagerTensor):
        t = tf.convert_to_tensor(t)
    if "GPU" in t.device:
        raise invalid_argument(f"hora.tensorflow.{what}: only CPU tensors are supported (got one on {t.device})")
    return t._numpy()


def _address(arr):
    return arr.__array_interface__["data"][0]


def _aligned_empty(shape, npdtype):
    """An uninitialised, 64-byte-aligned array and its address."""
    nbytes = math.prod(shape) * npdtype.itemsize
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    addr = _address(raw)
    off = -addr % _ALIGN
    return raw[off : off + nbytes].view(npdtype).reshape(shape), addr + off


def _aligned_copy(src):
    buf, ptr = _aligned_empty(src.shape, src.dtype)
    np.copyto(buf, src)
    return buf, ptr


def _to_tf(arr, ptr, dtype):
    """A tf.Tensor over ``arr``'s memory (DLPack, no copy); it keeps ``arr`` alive."""
    if ptr % _ALIGN:
        arr, ptr = _aligned_copy(arr)
    if dtype == tf.bfloat16:  # DLPack has no bfloat16 in NumPy: cross as uint16, reinterpret
        return tf.bitcast(_from_dlpack(arr.view(np.uint16).__dlpack__()), tf.bfloat16)
    return _from_dlpack(arr.__dlpack__())


def _from_output(res, dtype):
    out, shape, _splits = res
    npdt = _NP_DTYPES[dtype]
    if out is None or len(out) == 0 or math.prod(shape) == 0:
        arr, ptr = _aligned_empty(tuple(shape), npdt)
        return _to_tf(arr, ptr, dtype)
    arr = np.frombuffer(out, dtype=npdt).reshape(shape)
    return _to_tf(arr, _address(arr), dtype)


def _eager_name(prefix, name):
    return f"{prefix}.{name}" if name else f"tf.{prefix}.noname.{next(_noname)}"


_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-/]")


def _graph_name(prefix, name):
    """A name unique in the current graph (and so the same on every rank tracing it)."""
    g = tf.compat.v1.get_default_graph()
    base = f"{prefix}.{_NAME_CHARS.sub('_', name)}" if name else f"{prefix}.noname"
    return "tf." + g.unique_name(base, mark_as_used=True)


def _py_function(func, inputs, touts):
    """A tf.py_function running after the graph's previous hora op (program order)."""
    g = tf.compat.v1.get_default_graph()
    if _cf_util.GraphOrParentsInXlaContext(g):
        # Refused at trace time, before any rank submits anything, so no rank waits.
        raise invalid_argument("hora.tensorflow: collectives cannot run in a function compiled with XLA "
                               "(tf.function(jit_compile=True)): they are tf.py_function ops; use "
                               "jit_compile=False for the function that calls them")
    last = _last_op.get(g)

    def body(*xs):
        try:
            return func(*xs)
        except HoraError as e:
            _graph_errors.append(e)
            raise

    with tf.control_dependencies([last] if last is not None else []):
        outs = tf.py_function(body, inputs, touts)
    _last_op[g] = outs[0].op
    return outs


def engine_error(error):
    """The hora.HoraError behind a ``tf.errors.OpError`` raised by a tf.function whose hora op
    failed (a copy with the same class, message, ``rank``, ``tensor_name``, ``cause``), or None."""
    text = str(error)
    for e in reversed(_graph_errors):
        if str(e) in text:
            copy = type(e)(*e.args)
            for attr in ("rank", "tensor_name", "cause"):
                setattr(copy, attr, getattr(e, attr, None))
            return copy
    return None


@contextlib.contextmanager
def hora_errors():
    """Turns the ``tf.errors.OpError`` of a failed hora op inside a tf.function back into its
    ``hora.HoraError`` subclass (eager calls raise those directly). A context manager and a
    decorator: ``with hvd.hora_errors(): train_step(x)``."""
    try:
        yield
    except tf.errors.OpError as e:
        cause = engine_error(e)
        if cause is None:
            raise
        raise cause from e


def _graph_mode():
    return not tf.executing_eagerly()


def _differentiable(t):
    """Whether to attach a gradient: a floating tensor that a tape (or a graph) may differentiate."""
    return t.dtype.is_floating and (_graph_mode() or _record.could_possibly_record())


# ---------------------------------------------------------------------------------- allreduce


def _allreduce_eager(t, name, op, pre, post, ps=0):
    code = _code(t.dtype, "allreduce")
    buf, ptr = _aligned_copy(_eager_view(t, "allreduce"))
    _wait(_core.enqueue(kind=ALLREDUCE, name=name, dtype=code, shape=list(buf.shape), owner=buf, ptr=ptr,
                  nbytes=buf.nbytes, op=int(op), prescale=float(pre), postscale=float(post),
                  process_set=ps))
    return _to_tf(buf, ptr, t.dtype)


def _allreduce_raw(t, name, op, pre, post, ps=0):
    if not _graph_mode():
        return _allreduce_eager(t, _eager_name("allreduce", name), op, pre, post, ps)
    full = _graph_name("allreduce", name)
    out = _py_function(lambda x: _allreduce_eager(x, full, op, pre, post, ps), [t], [t.dtype])[0]
    out.set_shape(t.shape)
    return out


def _grad_name(name):
    return f"{name}.grad" if name else None


def _allreduce_diff(t, name, op, pre, post, ps=0):
    if not _differentiable(t):
        return _allreduce_raw(t, name, op, pre, post, ps)

    @tf.custom_gradient
    def fn(x):
        def grad(dy):
            return _allreduce_raw(tf.convert_to_tensor(dy), _grad_name(name), op, pre, post, ps)

        return _allreduce_raw(x, name, op, pre, post, ps), grad

    return fn(t)


def _allreduce_sparse(slices, name, op, pre, post, process_set=None):
    """IndexedSlices: gather every rank's values and indices (Horovod's sparse allreduce)."""
    if op not in (Average, Sum):
        raise invalid_argument("hora.tensorflow.allreduce: IndexedSlices support only Average and Sum")
    values = allgather(slices.values, name=f"{name}.values" if name else None, process_set=process_set)
    indices = allgather(slices.indices, name=f"{name}.indices" if name else None, process_set=process_set)
    scale = pre * post / (_id_size(_set_id(process_set, "allreduce")) if op == Average else 1)
    if scale != 1:
        values = values * tf.constant(scale, dtype=values.dtype)
    return tf.IndexedSlices(values, indices, dense_shape=slices.dense_shape)


def allreduce(tensor, average=None, device_dense="", device_sparse="", compression=Compression.none, op=None,
              prescale_factor=1.0, postscale_factor=1.0, name=None, process_set=None, ignore_name_scope=False):
    """Returns the reduction of ``tensor`` over all ranks (default op: Average); differentiable.

    ``tf.IndexedSlices`` are reduced by gathering every rank's values and indices.
    """
    ps = _set_id(process_set, "hora.tensorflow.allreduce")
    op = _op(average, op)
    if isinstance(tensor, tf.IndexedSlices):
        return _allreduce_sparse(tensor, name, op, prescale_factor, postscale_factor, process_set)
    t = _tensor(tensor, "allreduce")
    compressed, ctx = compression.compress(t)
    out = _allreduce_diff(compressed, name, op, prescale_factor, postscale_factor, ps)
    return compression.decompress(out, ctx)


def _eager_group(kind, what, ts, base, op=Average, root=0, pre=1.0, post=1.0, ps=0):
    """Runs an in-place collective (allreduce or broadcast) on each eager tensor of ``ts``, all
    submitted before any is waited on, as tensors ``<base>.<i>``; an allreduce list is one engine
    group (negotiated and fused as a unit)."""
    # One engine request per tensor (the engine fuses them): packing the group into one buffer
    # here would hide a rank-dependent shape from the engine's per-tensor checks.
    bufs = []
    for t in ts:
        code = _code(t.dtype, what)
        buf, ptr = _aligned_copy(_eager_view(t, what))
        bufs.append((buf, ptr, t.dtype, code))
    if kind == ALLREDUCE:
        members = [(f"{base}.{i}", code, list(buf.shape), buf, ptr, buf.nbytes)
                   for i, (buf, ptr, _dt, code) in enumerate(bufs)]
        handles = _core.enqueue_group(kind=kind, members=members, op=int(op), prescale=float(pre),
                                      postscale=float(post), process_set=ps)
    else:
        handles = [_core.enqueue(kind=kind, name=f"{base}.{i}", dtype=code, shape=list(buf.shape), owner=buf,
                                 ptr=ptr, nbytes=buf.nbytes, op=int(op), root=root, prescale=float(pre),
                                 postscale=float(post), process_set=ps)
                   for i, (buf, ptr, _dt, code) in enumerate(bufs)]
    _wait_all(handles)
    return [_to_tf(buf, ptr, dt) for buf, ptr, dt, _code in bufs]


def _grouped_raw(ts, name, op, pre, post, ps=0):
    if not ts:
        return []

    def run(xs, base):
        return _eager_group(ALLREDUCE, "grouped_allreduce", xs, base, op, 0, pre, post, ps)

    if not _graph_mode():
        return run(ts, f"grouped_allreduce.{name}" if name else f"tf.grouped_allreduce.noname.{next(_noname)}")
    base = _graph_name("grouped_allreduce", name)
    outs = _py_function(lambda *xs: run(xs, base), list(ts), [t.dtype for t in ts])
    for o, t in zip(outs, ts):
        o.set_shape(t.shape)
    return list(outs)


def _grouped_diff(ts, name, op, pre, post, ps=0):
    if not any(_differentiable(t) for t in ts):
        return _grouped_raw(ts, name, op, pre, post, ps)

    @tf.custom_gradient
    def fn(*xs):
        def grad(*dys):
            return _grouped_raw([tf.convert_to_tensor(d) for d in dys], _grad_name(name), op, pre, post, ps)

        return _grouped_raw(list(xs), name, op, pre, post, ps), grad

    return list(fn(*ts))


def grouped_allreduce(tensors, average=None, device_dense="", device_sparse="", compression=Compression.none,
                      op=None, prescale_factor=1.0, postscale_factor=1.0, name=None, process_set=None,
                      ignore_name_scope=False):
    """Returns the reductions of a list of tensors, submitted together (fused by the engine)."""
    ps = _set_id(process_set, "hora.tensorflow.grouped_allreduce")
    op = _op(average, op)
    ts = [_tensor(t, "grouped_allreduce") for t in tensors]
    pairs = [compression.compress(t) for t in ts]
    outs = _grouped_diff([c for c, _ in pairs], name, op, prescale_factor, postscale_factor, ps)
    return [compression.decompress(o, ctx) for o, (_, ctx) in zip(outs, pairs)]


# ---------------------------------------------------------------------------------- allgather


def _allgather_eager(t, name, ps=0):
    code = _code(t.dtype, "allgather")
    src = _eager_view(t, "allgather")
    if src.ndim == 0:
        src = src.reshape(1)
    res = _wait(_core.enqueue(kind=ALLGATHER, name=name, dtype=code, shape=list(src.shape), owner=src,
                        ptr=_address(src), nbytes=src.nbytes, process_set=ps))
    return _from_output(res, t.dtype)


def _allgather_raw(t, name, ps=0):
    if not _graph_mode():
        return _allgather_eager(t, _eager_name("allgather", name), ps)
    full = _graph_name("allgather", name)
    out = _py_function(lambda x: _allgather_eager(x, full, ps), [t], [t.dtype])[0]
    if t.shape.rank is not None:
        out.set_shape([None] + (t.shape.as_list()[1:] if t.shape.rank > 0 else []))
    return out


def _allgather_grad(dy, dim0, name, ps=0):
    # Horovod's convention: the incoming gradients are averaged over the ranks, then each rank
    # takes its own rows.
    summed = _allreduce_raw(dy, name, Average, 1.0, 1.0, ps)
    dims = _allgather_raw(tf.reshape(tf.cast(dim0, tf.int64), [1]), f"{name}.dims" if name else None, ps)
    offset = tf.reduce_sum(dims[: _id_rank(ps)])
    return tf.slice(summed, tf.concat([[offset], tf.zeros([tf.rank(summed) - 1], tf.int64)], 0),
                    tf.concat([[tf.cast(dim0, tf.int64)], tf.cast(tf.shape(summed)[1:], tf.int64)], 0))


def allgather(tensor, name=None, ignore_name_scope=False, process_set=None):
    """Returns every rank's tensor concatenated along dim 0 (first dims may differ); differentiable."""
    ps = _set_id(process_set, "hora.tensorflow.allgather")
    t = _tensor(tensor, "allgather")
    if not _differentiable(t):
        return _allgather_raw(t, name, ps)

    @tf.custom_gradient
    def fn(x):
        scalar = x.shape.rank == 0
        dim0 = 1 if scalar else tf.shape(x)[0]

        def grad(dy):
            g = _allgather_grad(tf.convert_to_tensor(dy), dim0, _grad_name(name), ps)
            return tf.reshape(g, []) if scalar else g

        return _allgather_raw(x, name, ps), grad

    return fn(t)


# ---------------------------------------------------------------------------------- broadcast


def _check_root(root_rank, what):
    if not isinstance(root_rank, (int, np.integer)) or isinstance(root_rank, bool):
        raise invalid_argument(f"hora.tensorflow.{what}: root_rank must be an int, got {type(root_rank).__name__}")
    return int(root_rank)


def _broadcast_eager(t, name, root, ps=0):
    code = _code(t.dtype, "broadcast")
    buf, ptr = _aligned_copy(_eager_view(t, "broadcast"))
    _wait(_core.enqueue(kind=BROADCAST, name=name, dtype=code, shape=list(buf.shape), owner=buf, ptr=ptr,
                  nbytes=buf.nbytes, root=root, process_set=ps))
    return _to_tf(buf, ptr, t.dtype)


def _broadcast_raw(t, root, name, ps=0):
    if not _graph_mode():
        return _broadcast_eager(t, _eager_name("broadcast", name), root, ps)
    full = _graph_name("broadcast", name)
    out = _py_function(lambda x: _broadcast_eager(x, full, root, ps), [t], [t.dtype])[0]
    out.set_shape(t.shape)
    return out


def broadcast(tensor, root_rank, name=None, ignore_name_scope=False, process_set=None):
    """Returns ``root_rank``'s tensor on every rank; differentiable (the gradient is the average
    of every rank's gradient on the root, zero elsewhere, as in Horovod)."""
    ps = _set_id(process_set, "hora.tensorflow.broadcast")
    root = _check_root(root_rank, "broadcast")
    t = _tensor(tensor, "broadcast")
    if not _differentiable(t):
        return _broadcast_raw(t, root, name, ps)

    @tf.custom_gradient
    def fn(x):
        def grad(dy):
            reduced = _allreduce_raw(tf.convert_to_tensor(dy), _grad_name(name), Average, 1.0, 1.0, ps)
            return reduced if rank() == root else tf.zeros_like(reduced)

        return _broadcast_raw(x, root, name, ps), grad

    return fn(t)


# ----------------------------------------------------------------------- alltoall, reducescatter


def _splits_list(splits):
    if splits is None:
        return []
    if isinstance(splits, tf.Tensor):
        splits = splits.numpy()
    return [int(s) for s in np.asarray(splits).reshape(-1)]


def _alltoall_eager(t, splits, name, ps=0):
    code = _code(t.dtype, "alltoall")
    src = _eager_view(t, "alltoall")
    res = _wait(_core.enqueue(kind=ALLTOALL, name=name, dtype=code, shape=list(src.shape), owner=src,
                        ptr=_address(src), nbytes=src.nbytes, splits=_splits_list(splits), process_set=ps))
    return _from_output(res, t.dtype), tf.constant(res[2], dtype=tf.int32)


def _alltoall_raw(t, splits, name, ps=0):
    if not _graph_mode():
        return _alltoall_eager(t, splits, _eager_name("alltoall", name), ps)
    full = _graph_name("alltoall", name)
    if splits is None:
        out, received = _py_function(lambda x: _alltoall_eager(x, None, full, ps), [t], [t.dtype, tf.int32])
    else:
        sp = tf.cast(tf.convert_to_tensor(splits), tf.int64)
        out, received = _py_function(lambda x, s: _alltoall_eager(x, s, full, ps), [t, sp], [t.dtype, tf.int32])
    if t.shape.rank is not None:
        out.set_shape([None] + t.shape.as_list()[1:])
    received.set_shape([_id_size(ps)])
    return out, received


def alltoall(tensor, splits=None, name=None, ignore_name_scope=False, process_set=None):
    """Scatters slices of ``tensor`` (``splits[d]`` rows of dim 0 to rank d; None: even) and
    gathers theirs. Returns the output, or ``(output, received_splits)`` when ``splits`` is given.
    Differentiable."""
    ps = _set_id(process_set, "hora.tensorflow.alltoall")
    t = _tensor(tensor, "alltoall")
    if not _differentiable(t):
        out, received = _alltoall_raw(t, splits, name, ps)
    else:
        holder = {}

        @tf.custom_gradient
        def fn(x):
            out, recv = _alltoall_raw(x, splits, name, ps)
            holder["received"] = recv

            def grad(dy):
                g, _ = _alltoall_raw(tf.convert_to_tensor(dy), recv, _grad_name(name), ps)
                return g

            return out, grad

        out = fn(t)
        received = holder["received"]
    return out if splits is None else (out, received)


def _reducescatter_eager(t, name, op, pre, post, ps=0):
    code = _code(t.dtype, "reducescatter")
    src = _eager_view(t, "reducescatter")
    res = _wait(_core.enqueue(kind=REDUCESCATTER, name=name, dtype=code, shape=list(src.shape), owner=src,
                        ptr=_address(src), nbytes=src.nbytes, op=int(op), prescale=float(pre),
                        postscale=float(post), process_set=ps))
    return _from_output(res, t.dtype)


def _reducescatter_raw(t, name, op, pre, post, ps=0):
    if not _graph_mode():
        return _reducescatter_eager(t, _eager_name("reducescatter", name), op, pre, post, ps)
    full = _graph_name("reducescatter", name)
    out = _py_function(lambda x: _reducescatter_eager(x, full, op, pre, post, ps), [t], [t.dtype])[0]
    if t.shape.rank is not None:
        dims = t.shape.as_list()
        n, r = _id_size(ps), _id_rank(ps)
        rows = None if dims[0] is None else dims[0] // n + (1 if r < dims[0] % n else 0)
        out.set_shape([rows] + dims[1:])
    return out


def reducescatter(tensor, device_dense="", compression=Compression.none, op=Average, name=None,
                  process_set=None, ignore_name_scope=False, prescale_factor=1.0, postscale_factor=1.0):
    """Returns this rank's share (along dim 0; earlier ranks get one more row when uneven) of the
    reduction of ``tensor``; differentiable."""
    ps = _set_id(process_set, "hora.tensorflow.reducescatter")
    op = _op(None, op)
    t = _tensor(tensor, "reducescatter")
    compressed, ctx = compression.compress(t)
    if not _differentiable(compressed):
        out = _reducescatter_raw(compressed, name, op, prescale_factor, postscale_factor, ps)
    else:
        # Horovod's convention: a Sum's gradient is scaled by the set's size, an Average's is
        # not; both by the pre- and postscale factors.
        scale = prescale_factor * postscale_factor * (_id_size(ps) if op == Sum else 1)

        @tf.custom_gradient
        def fn(x):
            def grad(dy):
                g = _allgather_raw(tf.convert_to_tensor(dy), _grad_name(name), ps)
                return g * tf.constant(scale, dtype=g.dtype) if scale != 1 else g

            return _reducescatter_raw(x, name, op, prescale_factor, postscale_factor, ps), grad

        out = fn(compressed)
    return compression.decompress(out, ctx)


# ------------------------------------------------------------------------------ barrier, join


def _barrier_eager(name, ps=0):
    _wait(_core.enqueue(kind=BARRIER, name=name, dtype=DTYPES["u8"], shape=[0], process_set=ps))
    return tf.constant(0, tf.int32)


def barrier(process_set=None):
    """Waits until every rank calls barrier (in a tf.function: when the op runs)."""
    ps = _set_id(process_set, "hora.tensorflow.barrier")
    if not _graph_mode():
        _barrier_eager(f"barrier.tf.{ps}.{next(_barriers)}", ps)
        return None
    full = _graph_name("barrier", None)
    return _py_function(lambda: _barrier_eager(full, ps), [], [tf.int32])[0].op


def join(device=""):
    """Declares this rank out of data: it joins other ranks' collectives with neutral input
    until every rank has joined. Returns the rank that joined last (an int32 scalar tensor)."""
    if not _graph_mode():
        return tf.constant(_core.join(), tf.int32)
    out = _py_function(lambda: tf.constant(_core.join(), tf.int32), [], [tf.int32])[0]
    out.set_shape([])
    return out


def _eager_gather_group(kind, what, ts, base, op=Average, pre=1.0, post=1.0, ps=0):
    """Allgathers or reducescatters eager tensors ``ts`` as one engine group ``<base>.<i>``."""
    members = []
    for i, t in enumerate(ts):
        code = _code(t.dtype, what)
        src = _eager_view(t, what)
        if kind == ALLGATHER and src.ndim == 0:
            src = src.reshape(1)
        members.append((f"{base}.{i}", code, list(src.shape), src, _address(src), src.nbytes))
    handles = _core.enqueue_group(kind=kind, members=members, op=int(op), prescale=float(pre),
                                  postscale=float(post), process_set=ps)
    return [_from_output(res, t.dtype) for res, t in zip(_wait_all_results(handles), ts)]


def _gathered_shape(kind, t, ps):
    """The static shape of ``t``'s allgather or reducescatter output, as far as it is known."""
    if t.shape.rank is None:
        return None
    dims = t.shape.as_list()
    if kind == ALLGATHER:
        return [None] + dims[1:]
    n, r = _id_size(ps), _id_rank(ps)
    return [None if dims[0] is None else dims[0] // n + (1 if r < dims[0] % n else 0)] + dims[1:]


def _gather_group_raw(kind, what, ts, name, op=Average, pre=1.0, post=1.0, ps=0):
    if not ts:
        return []
    if not _graph_mode():
        return _eager_gather_group(kind, what, ts, _eager_name(what, name), op, pre, post, ps)
    base = _graph_name(what, name)
    outs = list(_py_function(lambda *xs: _eager_gather_group(kind, what, xs, base, op, pre, post, ps), list(ts),
                             [t.dtype for t in ts]))
    for o, t in zip(outs, ts):
        shape = _gathered_shape(kind, t, ps)
        if shape is not None:
            o.set_shape(shape)
    return outs


def grouped_allgather(tensors, name=None, ignore_name_scope=False, process_set=None):
    """``allgather`` of each tensor of a list, submitted as one group (negotiated together);
    differentiable like ``allgather``."""
    ps = _set_id(process_set, "hora.tensorflow.grouped_allgather")
    ts = [_tensor(t, "grouped_allgather") for t in tensors]
    if not any(_differentiable(t) for t in ts):
        return _gather_group_raw(ALLGATHER, "grouped_allgather", ts, name, ps=ps)

    @tf.custom_gradient
    def fn(*xs):
        scalars = [x.shape.rank == 0 for x in xs]
        dims = [tf.constant(1, tf.int64) if s else tf.cast(tf.shape(x)[0], tf.int64) for x, s in zip(xs, scalars)]

        def grad(*dys):
            # As for allgather: average the incoming gradients (as one group), then each rank
            # takes its own rows of each.
            gname = _grad_name(name)
            averaged = _grouped_raw([tf.convert_to_tensor(d) for d in dys], gname, Average, 1.0, 1.0, ps)
            every = _allgather_raw(tf.reshape(tf.stack(dims), [1, len(dims)]), f"{gname}.dims" if gname else None, ps)
            offsets = tf.reduce_sum(every[: _id_rank(ps)], axis=0)
            out = []
            for i, (a, s) in enumerate(zip(averaged, scalars)):
                begin = tf.concat([[offsets[i]], tf.zeros([tf.rank(a) - 1], tf.int64)], 0)
                size = tf.concat([[dims[i]], tf.cast(tf.shape(a)[1:], tf.int64)], 0)
                g = tf.slice(a, begin, size)
                out.append(tf.reshape(g, []) if s else g)
            return out

        return _gather_group_raw(ALLGATHER, "grouped_allgather", list(xs), name, ps=ps), grad

    return list(fn(*ts))


def grouped_reducescatter(tensors, device_dense="", compression=Compression.none, op=Average, name=None,
                          process_set=None, ignore_name_scope=False, prescale_factor=1.0, postscale_factor=1.0):
    """``reducescatter`` of each tensor of a list, submitted as one group (negotiated and fused
    together); differentiable like ``reducescatter``."""
    ps = _set_id(process_set, "hora.tensorflow.grouped_reducescatter")
    op = _op(None, op)
    ts = [_tensor(t, "grouped_reducescatter") for t in tensors]
    pairs = [compression.compress(t) for t in ts]
    cs = [c for c, _ in pairs]

    def raw(xs):
        return _gather_group_raw(REDUCESCATTER, "grouped_reducescatter", xs, name, op, prescale_factor,
                                 postscale_factor, ps)

    if not any(_differentiable(c) for c in cs):
        outs = raw(cs)
    else:
        # As for reducescatter: a Sum's gradient is scaled by the set's size, an Average's is
        # not; both by the pre- and postscale factors.
        scale = prescale_factor * postscale_factor * (_id_size(ps) if op == Sum else 1)

        @tf.custom_gradient
        def fn(*xs):
            def grad(*dys):
                gs = _gather_group_raw(ALLGATHER, "grouped_allgather", [tf.convert_to_tensor(d) for d in dys],
                                       _grad_name(name), ps=ps)
                return [g * tf.constant(scale, dtype=g.dtype) if scale != 1 else g for g in gs]

            return raw(list(xs)), grad

        outs = list(fn(*cs))
    return [compression.decompress(o, ctx) for o, (_, ctx) in zip(outs, pairs)]
