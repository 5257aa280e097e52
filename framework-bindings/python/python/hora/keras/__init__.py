"""hora.keras: Horovod's Keras API (``horovod.keras`` / ``horovod.tensorflow.keras``) for Keras 3
on the TensorFlow backend.

    import hora.keras as hvd
    hvd.init()
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.01 * hvd.size()))
    model.compile(optimizer=opt, loss=..., jit_compile=False)
    model.fit(x, y, callbacks=[hvd.callbacks.BroadcastGlobalVariablesCallback(0),
                               hvd.callbacks.MetricAverageCallback()])

The collectives come from ``hora.tensorflow``; this package adds the optimizer wrapper, the
callbacks, and value-level helpers that return NumPy arrays.
"""

try:
    import keras as _keras
    import tensorflow as _tf
except ImportError as _e:  # pragma: no cover - exercised in an interpreter without them
    raise ImportError(
        "hora.keras needs TensorFlow and Keras 3, which are not installed in this Python "
        "(pip install tensorflow-cpu); the rest of hora imports without them"
    ) from _e

if _keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"hora.keras runs Keras on the TensorFlow backend, but this Keras uses "
        f"'{_keras.backend.backend()}': set KERAS_BACKEND=tensorflow before importing keras")

import gc
import weakref

import hora.tensorflow as _htf
from hora.common.process_sets import _set_id
from hora.common.api import *  # noqa: F401,F403  (process-level calls, exceptions)
from hora.keras import callbacks
from hora.keras import elastic  # noqa: F401  (refuses every name: not implemented)
from hora.keras import optimizer as _opt
from hora.tensorflow import Adasum, Average, Compression, Max, Min, Product, Sum, engine_error, hora_errors
from hora.tensorflow.gradient_tape import _check_local_layers

# Weak references to the optimizers made by DistributedOptimizer or load_model, in creation
# order (for broadcast_global_variables); they do not keep dropped models alive.
_registry = []


def DistributedOptimizer(optimizer, name=None, device_dense="", device_sparse="",
                         compression=Compression.none, sparse_as_dense=False, gradient_predivide_factor=1.0,
                         op=Average, backward_passes_per_step=1, average_aggregated_gradients=False,
                         num_groups=0, groups=None, process_set=None, scale_local_gradients=True):
    """Wraps a Keras optimizer so gradients are reduced over all ranks before they are applied.

    Returns a new optimizer of a subclass of ``optimizer``'s class, made from its config (its
    state starts empty, as in Horovod). ``op`` (``Average`` by default, or ``Sum``...) reduces
    the gradients; ``compression`` (``Compression.fp16``) halves the bytes sent;
    ``backward_passes_per_step=n`` accumulates gradients locally over ``n`` steps and reduces
    and applies them every ``n``-th step (summed, or averaged with
    ``average_aggregated_gradients=True``). The gradients are reduced by
    ``hora.tensorflow``'s grouped allreduce (all in one group unless ``groups``/``num_groups``
    split them); ``tf.IndexedSlices`` gradients are allgathered unless ``sparse_as_dense``.
    ``process_set`` reduces among that set's ranks (others keep their own gradients);
    variables given to the optimizer's ``register_local_var`` keep local gradients, divided by
    the set's size when ``scale_local_gradients`` (Horovod's default). ``device_dense`` and
    ``device_sparse`` are accepted and unused (hora runs on the CPU). Compile the model with
    ``jit_compile=False``: the collectives cannot run under XLA.
    """
    _set_id(process_set, "hora.keras.DistributedOptimizer")
    settings = _opt.make_settings(compression, op, gradient_predivide_factor, backward_passes_per_step,
                                  average_aggregated_gradients, sparse_as_dense, groups, num_groups, name,
                                  process_set, scale_local_gradients)
    cls = _opt.wrap_class(type(optimizer), settings)
    wrapped = cls.from_config(optimizer.get_config())
    _registry.append(weakref.ref(wrapped))
    return wrapped


def PartialDistributedOptimizer(optimizer, name=None, device_dense="", device_sparse="",
                                compression=Compression.none, sparse_as_dense=False, gradient_predivide_factor=1.0,
                                op=Average, groups=None, process_set=None, local_layers=None,
                                scale_local_gradients=True, **kwargs):
    """A ``DistributedOptimizer`` that keeps the gradients of ``local_layers`` (a Keras layer or
    a list of them) local: their trainable variables are registered with
    ``register_local_var``, so their gradients are not reduced (and are divided by the set's
    size when ``scale_local_gradients``). Other keyword arguments go to ``DistributedOptimizer``."""
    if op not in (Average, Sum):
        raise ValueError(f"hora.keras.PartialDistributedOptimizer: op must be Average or Sum, got {op!r}")
    local_vars = _check_local_layers(local_layers, "hora.keras.PartialDistributedOptimizer")
    opt = DistributedOptimizer(optimizer, name=name, device_dense=device_dense, device_sparse=device_sparse,
                               compression=compression, sparse_as_dense=sparse_as_dense,
                               gradient_predivide_factor=gradient_predivide_factor, op=op, groups=groups,
                               process_set=process_set, scale_local_gradients=scale_local_gradients, **kwargs)
    for v in local_vars:
        opt.register_local_var(v)
    return opt


def broadcast_global_variables(root_rank, model=None):
    """Makes every rank's variables equal to ``root_rank``'s.

    Keras 3 keeps no global variable collection, so "global" means: ``model``'s variables and
    its optimizer's when ``model`` is given, otherwise the model variables trained by, and the
    own variables of, every built optimizer made by ``DistributedOptimizer`` in this process.
    """
    if model is not None:
        variables = callbacks._variables_of(model)
    else:
        # Dropped models linger in reference cycles until a collection; without it a model from
        # an earlier failed attempt (say, of another shape) would still count as "global".
        gc.collect()
        variables, seen = [], set()
        for ref in _registry:
            opt = ref()
            if opt is None or not opt.built:
                continue
            for v in list(opt._trainable_variables) + list(opt.variables):
                if id(v) not in seen:
                    seen.add(id(v))
                    variables.append(v)
        if not variables:
            raise ValueError("hora.keras.broadcast_global_variables: no built DistributedOptimizer and no "
                             "model= given, so there is nothing to broadcast; pass model=, or use "
                             "callbacks.BroadcastGlobalVariablesCallback")
    _htf.broadcast_variables(variables, root_rank=root_rank)


def _value(tensor):
    return tensor.numpy() if hasattr(tensor, "numpy") else tensor


def allreduce(value, name=None, average=None, prescale_factor=1.0, postscale_factor=1.0, op=None,
              compression=Compression.none):
    """Reduces a tensor-compatible value over all ranks (default: average); returns a NumPy value."""
    return _value(_htf.allreduce(_tf.convert_to_tensor(value), average=average, name=name, op=op,
                                 prescale_factor=prescale_factor, postscale_factor=postscale_factor,
                                 compression=compression))


def allgather(value, name=None):
    """Concatenates a tensor-compatible value from every rank along dimension 0 (NumPy result)."""
    return _value(_htf.allgather(_tf.convert_to_tensor(value), name=name))


def broadcast(value, root_rank, name=None):
    """Returns ``root_rank``'s value of a tensor-compatible value, as a NumPy value."""
    return _value(_htf.broadcast(_tf.convert_to_tensor(value), root_rank, name=name))


def reducescatter(value, name=None, op=Average):
    """This rank's share (along dimension 0) of the reduction of a tensor-compatible value over
    all ranks (default: average), as a NumPy value."""
    return _value(_htf.reducescatter(_tf.convert_to_tensor(value), name=name, op=op))


def load_model(filepath, custom_optimizers=None, custom_objects=None, compression=Compression.none,
               legacy_opts=False, **kwargs):
    """Loads a saved Keras model and makes its optimizer a DistributedOptimizer, keeping its state.

    ``custom_optimizers`` (optimizer classes) and ``custom_objects`` are passed to
    ``keras.models.load_model`` so their names resolve; the other keyword arguments of
    ``DistributedOptimizer`` (``op``, ``backward_passes_per_step``...) are accepted too.
    """
    if legacy_opts:
        raise ValueError("hora.keras.load_model: legacy_opts=True asks for Keras 2's legacy optimizers "
                         "(keras.optimizers.legacy), which Keras 3 does not have; load with legacy_opts=False")
    objects = dict(custom_objects or {})
    for cls in custom_optimizers or ():
        objects.setdefault(cls.__name__, cls)
    opt_kwargs = {k: kwargs.pop(k) for k in ("op", "gradient_predivide_factor", "backward_passes_per_step",
                                             "average_aggregated_gradients", "sparse_as_dense")
                  if k in kwargs}
    model = _keras.models.load_model(filepath, custom_objects=objects, **kwargs)
    opt = getattr(model, "optimizer", None)
    if opt is not None and not _opt.is_distributed(opt):
        if opt_kwargs.get("backward_passes_per_step", 1) != 1 and opt.built:
            raise ValueError("hora.keras.load_model: backward_passes_per_step > 1 needs an optimizer that "
                             "is not built yet; wrap a fresh optimizer with DistributedOptimizer instead")
        settings = _opt.make_settings(compression, opt_kwargs.get("op", Average),
                                      opt_kwargs.get("gradient_predivide_factor", 1.0),
                                      opt_kwargs.get("backward_passes_per_step", 1),
                                      opt_kwargs.get("average_aggregated_gradients", False),
                                      opt_kwargs.get("sparse_as_dense", False), None, 0, None)
        # Changing the class in place keeps the loaded slots, iterations and learning rate.
        opt.__class__ = _opt.wrap_class(type(opt), settings)
        _registry.append(weakref.ref(opt))
    return model


__all__ = [name for name in dir() if not name.startswith("_")]
