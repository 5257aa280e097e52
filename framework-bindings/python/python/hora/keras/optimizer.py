"""DistributedOptimizer for Keras 3 on the TensorFlow backend.

Keras 3's training step (``Model.train_step``) computes the gradients and hands them to
``optimizer.apply_gradients``, which calls ``optimizer.apply(grads, variables)``. The wrapper is
a subclass of the user's optimizer class, made on the fly, whose ``apply`` averages the gradients
over all ranks (one grouped allreduce through ``hora.tensorflow``) and then runs the original
``apply``. Everything else (learning rate, slots, clipping, loss scaling, ``get_config``) is the
wrapped class's own.

The collectives run as ``tf.py_function`` ops, so the step works eagerly and inside
``tf.function`` (``model.fit``'s default), but not under XLA: a step traced with
``jit_compile=True`` is refused with an error that says to compile with ``jit_compile=False``.
"""

import dataclasses

import keras
import tensorflow as tf
from tensorflow.python.framework import ops as _tf_ops
from tensorflow.python.ops import control_flow_util as _cf_util

import hora.tensorflow as _htf
from hora.common.basics import size
from hora.tensorflow.gradient_tape import allreduce_gradients


@dataclasses.dataclass(frozen=True)
class _Settings:
    compression: object
    op: object
    gradient_predivide_factor: float
    backward_passes_per_step: int
    average_aggregated_gradients: bool
    sparse_as_dense: bool
    groups: object
    num_groups: int
    name: object
    process_set: object = None
    scale_local_gradients: bool = True


def _in_xla_context():
    """True while tracing a function that XLA will compile (``jit_compile=True``)."""
    if tf.executing_eagerly():
        return False
    return _cf_util.GraphOrParentsInXlaContext(_tf_ops.get_default_graph())


def check_not_xla(what):
    """Raises ValueError when called while tracing an XLA-compiled step."""
    if _in_xla_context():
        raise ValueError(
            f"{what}: the training step is being compiled with XLA (jit_compile=True), which "
            "cannot run hora's collectives (they are tf.py_function ops). Compile the model with "
            "model.compile(..., jit_compile=False); on a machine with a GPU Keras picks XLA by "
            "default (jit_compile='auto'), so pass jit_compile=False explicitly")


class _DistributedMixin:
    """Put in front of the user's optimizer class (see DistributedOptimizer)."""

    _hora = None  # a _Settings, set on each generated class

    def build(self, variables):
        """Builds the wrapped optimizer, plus local accumulators when backward_passes_per_step > 1."""
        if self.built:
            return
        super().build(variables)
        if self._hora.backward_passes_per_step > 1:
            # Names start with "hora_" so they never collide with the wrapped optimizer's slots.
            self._hora_accumulators = [
                self.add_variable_from_reference(v, name="hora_accumulated_gradient") for v in variables
            ]
            self._hora_passes = self.add_variable(shape=(), dtype="int64", initializer="zeros",
                                                  name="hora_backward_passes")
        self.built = True

    def register_local_var(self, var):
        """Keeps ``var``'s gradient local (not reduced; divided by the set's size unless
        ``scale_local_gradients=False``), e.g. for a rank-local layer's weights."""
        local = self.__dict__.setdefault("_hora_local", [])
        if all(v is not var for v in local):
            local.append(var)

    def _hora_reduce(self, grads, variables):
        """Reduces the gradients over all ranks with hora.tensorflow (grouped, fused allreduces;
        IndexedSlices by allgather unless sparse_as_dense). None stays None."""
        s = self._hora
        if size() == 1:
            return list(grads)
        return allreduce_gradients(list(grads), sources=list(variables), compression=s.compression,
                                   sparse_as_dense=s.sparse_as_dense, op=s.op,
                                   gradient_predivide_factor=s.gradient_predivide_factor, groups=s.groups,
                                   num_groups=s.num_groups, process_set=s.process_set,
                                   local_sources=self.__dict__.get("_hora_local", ()),
                                   scale_local_gradients=s.scale_local_gradients)

    def apply(self, grads, trainable_variables=None):
        """Reduces ``grads`` over all ranks, then applies them as the wrapped optimizer would."""
        check_not_xla(f"hora.keras.DistributedOptimizer({type(self).__name__})")
        grads = list(grads)
        if not grads:
            return super().apply(grads, trainable_variables)
        if trainable_variables is None:
            if not self.built:
                raise ValueError("hora.keras.DistributedOptimizer.apply: pass trainable_variables on the "
                                 "first call (the optimizer is not built yet)")
            trainable_variables = self._trainable_variables
        trainable_variables = list(trainable_variables)
        if self._hora.backward_passes_per_step == 1:
            return super().apply(self._hora_reduce(grads, trainable_variables), trainable_variables)
        if not self.built:
            # Built here, outside the tf.cond below: variables cannot be created inside a branch.
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
        return self._hora_accumulate(grads, trainable_variables)

    def _hora_accumulate(self, grads, variables):
        s = self._hora
        n = s.backward_passes_per_step
        accs = [self._hora_accumulators[self._get_variable_index(v)] for v in variables]
        for g, acc in zip(grads, accs):
            if g is not None:
                acc.assign_add(tf.cast(tf.convert_to_tensor(g), acc.dtype))
        self._hora_passes.assign_add(1)
        base_apply = super().apply

        def update():
            total = [tf.convert_to_tensor(acc) if g is not None else None for g, acc in zip(grads, accs)]
            if s.average_aggregated_gradients:
                total = [None if t is None else t / n for t in total]
            base_apply(self._hora_reduce(total, variables), variables)
            for acc in accs:
                acc.assign(tf.zeros_like(acc))

        keras.ops.cond(tf.equal(self._hora_passes % n, 0), update, lambda: None)


def wrap_class(base, settings):
    """The distributed subclass of ``base`` (an optimizer class) for ``settings``: its apply
    reduces the gradients first."""
    if issubclass(base, _DistributedMixin):
        raise ValueError("hora.keras.DistributedOptimizer: the optimizer is already distributed")
    if not issubclass(base, keras.optimizers.Optimizer):
        raise TypeError(f"hora.keras.DistributedOptimizer: expected a keras.optimizers.Optimizer, "
                        f"got {base.__name__}")
    # The base's module and name, so a saved model names the plain optimizer and loads anywhere
    # (hora.keras.load_model wraps it again).
    return type(base.__name__, (_DistributedMixin, base),
                {"_hora": settings, "__module__": base.__module__, "__qualname__": base.__qualname__})


def make_settings(compression, op, gradient_predivide_factor, backward_passes_per_step,
                  average_aggregated_gradients, sparse_as_dense, groups, num_groups, name, process_set=None,
                  scale_local_gradients=True):
    """Validates the wrapper's arguments (shared by DistributedOptimizer and load_model)."""
    op = _htf.Average if op is None else op
    if gradient_predivide_factor != 1.0 and op != _htf.Average:
        raise ValueError("hora.keras.DistributedOptimizer: gradient_predivide_factor needs op=Average")
    if int(backward_passes_per_step) < 1:
        raise ValueError("hora.keras.DistributedOptimizer: backward_passes_per_step must be at least 1, "
                         f"got {backward_passes_per_step}")
    return _Settings(compression, op, float(gradient_predivide_factor), int(backward_passes_per_step),
                     bool(average_aggregated_gradients), bool(sparse_as_dense), groups, int(num_groups or 0), name,
                     process_set, bool(scale_local_gradients))


def is_distributed(optimizer):
    """True for an optimizer made by DistributedOptimizer or load_model."""
    return isinstance(optimizer, _DistributedMixin)
