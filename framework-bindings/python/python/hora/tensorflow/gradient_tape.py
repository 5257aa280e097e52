"""DistributedGradientTape and DistributedOptimizer (tf.compat.v1): gradients averaged over ranks."""

import sys

import tensorflow as tf

from hora._core import InvalidArgumentError
from hora.common.process_sets import _id_size, _set_id
from hora.tensorflow import mpi_ops
from hora.tensorflow.compression import Compression


def _split_groups(indices, sources, groups, num_groups):
    """Lists of gradient positions, each submitted as one grouped allreduce."""
    if groups is not None:
        if num_groups:
            raise ValueError("hora.tensorflow: give groups or num_groups, not both")
        if isinstance(groups, int):
            num_groups, groups = groups, None
    if groups is not None:
        by_id = {id(s): i for i, s in enumerate(sources)} if sources is not None else {}
        out, seen = [], set()
        for group in groups:
            members = [by_id[id(v)] for v in group if id(v) in by_id and by_id[id(v)] in indices]
            seen.update(members)
            if members:
                out.append(members)
        rest = [i for i in indices if i not in seen]
        return out + ([rest] if rest else [])
    if num_groups and num_groups > 0:
        k = min(num_groups, len(indices)) or 1
        per = -(-len(indices) // k)
        return [indices[i : i + per] for i in range(0, len(indices), per)]
    return [indices] if indices else []


def allreduce_gradients(grads, sources=None, compression=Compression.none, sparse_as_dense=False, op=mpi_ops.Average,
                        gradient_predivide_factor=1.0, groups=None, num_groups=0, local_sources=(),
                        process_set=None, scale_local_gradients=True):
    """Reduces a list of gradients over all ranks: dense ones in grouped (fused) allreduces,
    ``tf.IndexedSlices`` by allgather (or densely with ``sparse_as_dense``). None stays None.

    ``gradient_predivide_factor`` splits the averaging into a division by that factor before
    the sum and by ``size() / factor`` after it (Horovod's semantics). Gradients of
    ``local_sources`` are not reduced; with ``scale_local_gradients`` (the default, as in
    Horovod) they are divided by the process set's size, so that a local and a reduced
    gradient of the same loss have the same scale. With ``process_set``, gradients are reduced among
    its ranks; a rank outside it keeps its own (Horovod's behaviour). Works eagerly and inside a
    tf.function.
    """
    ps = _set_id(process_set, "hora.tensorflow.allreduce_gradients")
    if ps != 0 and not process_set.included():
        return list(grads)
    op = mpi_ops._op(None, op)
    if gradient_predivide_factor != 1.0 and op != mpi_ops.Average:
        raise ValueError("hora.tensorflow: gradient_predivide_factor needs op=Average")
    pre, post = 1.0, 1.0
    if op == mpi_ops.Average and gradient_predivide_factor != 1.0:
        op, pre, post = mpi_ops.Sum, 1.0 / gradient_predivide_factor, gradient_predivide_factor / _id_size(ps)
    grads = list(grads)
    local = {id(v) for v in local_sources}
    out = list(grads)
    dense, sparse = [], []
    for i, g in enumerate(grads):
        if g is None or (sources is not None and id(sources[i]) in local):
            continue
        if isinstance(g, tf.IndexedSlices):
            if sparse_as_dense:
                grads[i] = tf.convert_to_tensor(g)
                dense.append(i)
            else:
                sparse.append(i)
        else:
            dense.append(i)
    for group in _split_groups(dense, sources, groups, num_groups):
        reduced = mpi_ops.grouped_allreduce([grads[i] for i in group], op=op, compression=compression,
                                            prescale_factor=pre, postscale_factor=post, process_set=process_set)
        for i, r in zip(group, reduced):
            out[i] = r
    for i in sparse:
        out[i] = mpi_ops.allreduce(grads[i], op=op, prescale_factor=pre, postscale_factor=post,
                                   process_set=process_set)
    if scale_local_gradients and local and sources is not None:
        n = _id_size(ps)
        for i, g in enumerate(grads):
            if g is not None and id(sources[i]) in local:
                out[i] = _scaled(g, 1.0 / n)
    return out


def _scaled(g, factor):
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(g.values * tf.cast(factor, g.values.dtype), g.indices, g.dense_shape)
    return g * tf.cast(factor, g.dtype)


def _check_local_layers(local_layers, what):
    """The trainable variables of ``local_layers`` (a Keras layer or a list of them)."""
    import keras

    if local_layers is None:
        return []
    if isinstance(local_layers, keras.layers.Layer):
        local_layers = [local_layers]
    local_layers = list(local_layers)
    for i, layer in enumerate(local_layers):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(f"{what}: local_layers[{i}] is a {type(layer).__name__}, not a keras.layers.Layer")
    return [v for layer in local_layers for v in layer.trainable_weights]


class _DistributedGradientTape:
    """Put in front of the user's tape class in a subclass made on the fly (see
    DistributedGradientTape)."""

    def gradient(self, target, sources, output_gradients=None, unconnected_gradients=None):
        """The tape's gradients, reduced over all ranks (same structure as ``sources``)."""
        kwargs = {} if unconnected_gradients is None else {"unconnected_gradients": unconnected_gradients}
        grads = super(_DistributedGradientTape, self).gradient(target, sources, output_gradients, **kwargs)
        flat_sources = tf.nest.flatten(sources)
        flat = allreduce_gradients(tf.nest.flatten(grads, expand_composites=False), flat_sources,
                                   **self._hora_options, local_sources=self._hora_local)
        return tf.nest.pack_sequence_as(grads, flat)

    def register_local_source(self, source):
        """Keeps ``source``'s gradient local (not reduced; divided by the set's size unless
        ``scale_local_gradients=False``), e.g. for a rank-local variable."""
        if all(s is not source for s in self._hora_local):
            self._hora_local.append(source)

    def get_local_and_global_gradients(self, target, sources, output_gradients=None):
        """``gradient()``'s results split into ``(local, global)`` lists of ``(source, gradient)``
        pairs, by whether the source was registered local."""
        flat_sources = tf.nest.flatten(sources)
        grads = tf.nest.flatten(self.gradient(target, sources, output_gradients))
        local, rest = [], []
        for s, g in zip(flat_sources, grads):
            (local if any(s is v for v in self._hora_local) else rest).append((s, g))
        return local, rest


def DistributedGradientTape(gradtape, device_dense="", device_sparse="", compression=Compression.none,
                            sparse_as_dense=False, op=mpi_ops.Average, gradient_predivide_factor=1.0,
                            num_groups=0, groups=None, process_set=None, scale_local_gradients=True):
    """Wraps a ``tf.GradientTape`` so that ``gradient()`` returns gradients averaged over ranks.

    Use it after the ``with tf.GradientTape() as tape:`` block: ``tape =
    hvd.DistributedGradientTape(tape)``. The result is an instance of a subclass of the tape's
    class sharing its recorded state. Dense gradients go in one grouped allreduce (or
    ``num_groups``/``groups`` of them). Gradients of sources given to
    ``register_local_source`` stay local, divided by the set's size when
    ``scale_local_gradients`` (Horovod's default). ``device_*`` are accepted and unused (CPU).
    """
    _set_id(process_set, "hora.tensorflow.DistributedGradientTape")
    mpi_ops._op(None, op)
    base = type(gradtape)
    if isinstance(gradtape, _DistributedGradientTape):
        raise ValueError("hora.tensorflow.DistributedGradientTape: the tape is already distributed")
    cls = type(base.__name__, (_DistributedGradientTape, base), {})
    tape = object.__new__(cls)
    tape.__dict__.update(gradtape.__dict__)
    tape._hora_options = {"compression": compression, "sparse_as_dense": sparse_as_dense, "op": op,
                          "gradient_predivide_factor": gradient_predivide_factor, "groups": groups,
                          "num_groups": num_groups, "process_set": process_set,
                          "scale_local_gradients": bool(scale_local_gradients)}
    tape._hora_local = []
    return tape


def PartialDistributedGradientTape(gradtape, device_dense="", device_sparse="", compression=Compression.none,
                                   sparse_as_dense=False, op=mpi_ops.Average, gradient_predivide_factor=1.0,
                                   num_groups=0, groups=None, process_set=None, local_layers=None,
                                   scale_local_gradients=True):
    """A ``DistributedGradientTape`` whose ``local_layers``' (a Keras layer or a list of them)
    trainable variables are registered local: their gradients are not reduced (and are divided
    by the set's size when ``scale_local_gradients``)."""
    local_vars = _check_local_layers(local_layers, "hora.tensorflow.PartialDistributedGradientTape")
    tape = DistributedGradientTape(gradtape, device_dense, device_sparse, compression, sparse_as_dense, op,
                                   gradient_predivide_factor, num_groups, groups, process_set,
                                   scale_local_gradients)
    for v in local_vars:
        tape.register_local_source(v)
    return tape


class _DistributedOptimizer(tf.compat.v1.train.Optimizer):
    """A tf.compat.v1 optimizer whose compute_gradients returns gradients averaged over ranks."""

    def __init__(self, optimizer, name, use_locking, options):
        super().__init__(name=name, use_locking=use_locking)
        self._optimizer = optimizer
        self._hora_options = options
        self._hora_local = []

    def register_local_var(self, var):
        """Keeps ``var``'s gradient local (not reduced; divided by the set's size unless
        ``scale_local_gradients=False``)."""
        if all(v is not var for v in self._hora_local):
            self._hora_local.append(var)

    def compute_gradients(self, *args, **kwargs):
        """The wrapped optimizer's (gradient, variable) pairs, gradients reduced over ranks."""
        pairs = self._optimizer.compute_gradients(*args, **kwargs)
        if not pairs:
            return pairs
        grads, variables = zip(*pairs)
        reduced = allreduce_gradients(grads, list(variables), **self._hora_options, local_sources=self._hora_local)
        return list(zip(reduced, variables))

    def apply_gradients(self, *args, **kwargs):
        """Applies (already reduced) gradients with the wrapped optimizer."""
        return self._optimizer.apply_gradients(*args, **kwargs)

    def get_slot(self, *args, **kwargs):
        """The wrapped optimizer's slot."""
        return self._optimizer.get_slot(*args, **kwargs)

    def get_slot_names(self, *args, **kwargs):
        """The wrapped optimizer's slot names."""
        return self._optimizer.get_slot_names(*args, **kwargs)

    def variables(self, *args, **kwargs):
        """The wrapped optimizer's variables."""
        return self._optimizer.variables(*args, **kwargs)


def _is_keras_optimizer(optimizer):
    for modname in ("keras", "tf_keras"):
        mod = sys.modules.get(modname)
        base = getattr(getattr(mod, "optimizers", None), "Optimizer", None)
        if base is not None and isinstance(optimizer, base):
            return True
    return type(optimizer).__module__.split(".")[0] in ("keras", "tf_keras")


def DistributedOptimizer(optimizer, name=None, use_locking=False, device_dense="", device_sparse="",
                         compression=Compression.none, sparse_as_dense=False, backward_passes_per_step=1,
                         op=mpi_ops.Average, gradient_predivide_factor=1.0, average_aggregated_gradients=False,
                         num_groups=0, groups=None, process_set=None, scale_local_gradients=True):
    """Wraps a ``tf.compat.v1.train.Optimizer`` so ``compute_gradients`` (and so ``minimize``)
    averages gradients over ranks. A Keras optimizer is handed to ``hora.keras.DistributedOptimizer``.
    Variables given to ``register_local_var`` keep local gradients, divided by the set's size
    when ``scale_local_gradients``. ``device_*`` are accepted and unused (CPU)."""
    _set_id(process_set, "hora.tensorflow.DistributedOptimizer")
    if _is_keras_optimizer(optimizer):
        try:
            from hora import keras as hora_keras
        except ImportError as e:
            raise ValueError("hora.tensorflow.DistributedOptimizer: a Keras optimizer needs "
                             f"hora.keras.DistributedOptimizer, which could not be imported ({e})") from e
        return hora_keras.DistributedOptimizer(
            optimizer, name=name, device_dense=device_dense, device_sparse=device_sparse,
            compression=compression, sparse_as_dense=sparse_as_dense,
            gradient_predivide_factor=gradient_predivide_factor, op=op,
            backward_passes_per_step=backward_passes_per_step,
            average_aggregated_gradients=average_aggregated_gradients, groups=groups, num_groups=num_groups,
            process_set=process_set, scale_local_gradients=scale_local_gradients)
    if not isinstance(optimizer, tf.compat.v1.train.Optimizer):
        raise TypeError("hora.tensorflow.DistributedOptimizer: expected a tf.compat.v1.train.Optimizer or a "
                        f"Keras optimizer, got {type(optimizer).__name__}")
    if backward_passes_per_step != 1:
        raise InvalidArgumentError("hora.tensorflow.DistributedOptimizer: backward_passes_per_step > 1 (local "
                                   "gradient accumulation) is not supported for tf.compat.v1 optimizers")
    if mpi_ops._op(None, op) == mpi_ops.Adasum:
        # Horovod's tf.compat.v1 Adasum is a delta optimizer (local step, then Adasum of the
        # change), not an allreduce of gradients; hora has it for torch only so far.
        raise InvalidArgumentError("hora.tensorflow.DistributedOptimizer: op=Adasum with a tf.compat.v1 "
                                   "optimizer (Horovod's delta optimizer) is not implemented; use "
                                   "DistributedGradientTape(op=Adasum) or hora.keras.DistributedOptimizer")
    options = {"compression": compression, "sparse_as_dense": sparse_as_dense, "op": op,
               "gradient_predivide_factor": gradient_predivide_factor, "groups": groups, "num_groups": num_groups,
               "process_set": process_set, "scale_local_gradients": bool(scale_local_gradients)}
    return _DistributedOptimizer(optimizer, name or f"Distributed{type(optimizer).__name__}", use_locking, options)
