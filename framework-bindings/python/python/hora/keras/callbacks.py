"""Keras callbacks for data-parallel training (``horovod.keras.callbacks``' names and semantics).

    callbacks = [
        BroadcastGlobalVariablesCallback(0),      # same initial weights everywhere
        MetricAverageCallback(),                  # epoch logs averaged over ranks
        LearningRateWarmupCallback(initial_lr=0.1 * hvd.size(), warmup_epochs=3),
    ]
"""

import keras
import numpy as np
import tensorflow as tf

import hora.tensorflow as _htf
from hora.common.basics import size


def _lr(optimizer):
    """The optimizer's current learning rate as a float."""
    lr = optimizer.learning_rate
    return float(lr.numpy()) if hasattr(lr, "numpy") else float(lr)


def _variables_of(model):
    out = list(model.variables)
    opt = getattr(model, "optimizer", None)
    if opt is not None and getattr(opt, "built", False):
        out += list(opt.variables)
    return out


def _is_variable(v):
    return isinstance(v, (tf.Variable, keras.Variable))


class BroadcastGlobalVariablesCallback(keras.callbacks.Callback):
    """Broadcasts the model's and its optimizer's variables from ``root_rank`` when training starts.

    Use it when every rank builds its own model with a different random initialization (or
    loads a checkpoint only on one rank). When the model is built at ``on_train_begin`` (a
    functional or Sequential model with known inputs), the callback builds the optimizer there
    too, as Keras would at the first step, and broadcasts both, so the first step already
    starts from the same weights and slots on every rank. A model that is still unbuilt then
    (a subclassed model) is broadcast after its first batch instead, as in Horovod.
    ``local_variables`` (a variable or a list of them; more with ``register_local_var``) are
    left as they are on each rank. ``device`` is accepted and unused (hora runs on the CPU).
    """

    def __init__(self, root_rank, device="", local_variables=None):
        super().__init__()
        self.root_rank = root_rank
        self.device = device
        self.broadcast_done = False
        self._local_vars = []
        if local_variables is None:
            local_variables = []
        elif _is_variable(local_variables):
            local_variables = [local_variables]
        for i, var in enumerate(local_variables):
            if not _is_variable(var):
                raise ValueError(f"BroadcastGlobalVariablesCallback: local_variables[{i}] is a "
                                 f"{type(var).__name__}, not a tf.Variable or keras.Variable")
            self.register_local_var(var)

    def register_local_var(self, var):
        """Leaves ``var`` out of the broadcast (each rank keeps its own value)."""
        if all(v is not var for v in self._local_vars):
            self._local_vars.append(var)

    def _is_local(self, var):
        # A Keras variable wraps a tf.Variable: either may have been registered.
        inner = getattr(var, "value", None)
        return any(v is var or (inner is not None and v is inner) for v in self._local_vars)

    def _broadcast(self):
        variables = [v for v in _variables_of(self.model) if not self._is_local(v)]
        _htf.broadcast_variables(variables, root_rank=self.root_rank)
        self.broadcast_done = True

    def on_train_begin(self, logs=None):
        if self.broadcast_done or not self.model.built:
            return
        opt = getattr(self.model, "optimizer", None)
        if opt is not None and not opt.built:
            opt.build(self.model.trainable_variables)
        self._broadcast()

    def on_train_batch_end(self, batch, logs=None):
        if not self.broadcast_done:
            self._broadcast()


class MetricAverageCallback(keras.callbacks.Callback):
    """Replaces each numeric value in the epoch logs by its average over all ranks.

    Put it before callbacks that read the logs (checkpointing, early stopping, schedules on a
    metric). Every rank must log the same metric names; they are reduced together, in sorted
    name order, in one allreduce.
    """

    def __init__(self, device=""):
        super().__init__()
        self.device = device

    def on_epoch_end(self, epoch, logs=None):
        if not logs or size() == 1:
            return
        names = sorted(k for k, v in logs.items() if isinstance(v, (int, float, np.number)) and not isinstance(v, bool))
        if not names:
            return
        values = np.array([float(logs[k]) for k in names], dtype=np.float64)
        averaged = _htf.allreduce(tf.constant(values), op=_htf.Average,
                                  name=f"MetricAverageCallback.epoch{epoch}").numpy()
        for k, v in zip(names, averaged):
            logs[k] = float(v)


class LearningRateScheduleCallback(keras.callbacks.Callback):
    """Sets the learning rate to ``initial_lr * multiplier(epoch)`` from ``start_epoch`` up to
    (not including) ``end_epoch``.

    ``multiplier`` is a number (applied at the first batch of each epoch in range) or a function
    of the epoch. With ``staircase=True`` the function is called with the integer epoch at the
    first batch of each epoch; with ``staircase=False`` it is called before every batch with the
    fractional epoch ``epoch + batch / steps_per_epoch`` (``steps_per_epoch`` defaults to the
    number of batches Keras reports). ``momentum_correction`` rescales an SGD/RMSprop momentum
    buffer by ``new_lr / old_lr`` whenever the learning rate changes, which is what Horovod's
    temporary momentum change amounts to. The epoch logs get the learning rate as ``lr``.
    """

    def __init__(self, initial_lr, multiplier, start_epoch=0, end_epoch=None, staircase=True,
                 momentum_correction=True, steps_per_epoch=None):
        super().__init__()
        if initial_lr is None:
            raise ValueError("LearningRateScheduleCallback: initial_lr is required (the learning rate the "
                             "multiplier applies to)")
        self.initial_lr = float(initial_lr)
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.staircase = staircase
        self.momentum_correction = momentum_correction
        self.steps_per_epoch = steps_per_epoch
        self.current_epoch = None
        if callable(multiplier):
            self.multiplier = multiplier
        else:
            factor = float(multiplier)
            self.staircase = True
            self.multiplier = lambda _epoch: factor

    def _steps(self):
        if self.steps_per_epoch:
            return self.steps_per_epoch
        steps = (self.params or {}).get("steps")
        if not steps:
            raise ValueError("LearningRateScheduleCallback: cannot tell the number of steps per epoch "
                             "(the data has no known length); pass steps_per_epoch=")
        return steps

    def _momentum_slots(self, opt):
        if not self.momentum_correction or not getattr(opt, "momentum", 0):
            return []
        for attr in ("momentums", "_momentums"):
            slots = getattr(opt, attr, None)
            if isinstance(slots, list) and slots:
                return slots
        return []

    def _set_lr(self, epoch):
        opt = self.model.optimizer
        old = _lr(opt)
        opt.learning_rate = self.initial_lr * self.multiplier(epoch)
        new = _lr(opt)  # as stored (the variable may be float32): the ratio of the rates used
        if old != 0 and new != old:
            ratio = new / old
            for slot in self._momentum_slots(opt):
                slot.assign(slot * ratio)

    def on_train_begin(self, logs=None):
        if not self.staircase:
            self._steps()  # fail early, before the first step, when it cannot be known

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        e = self.current_epoch
        if e < self.start_epoch or (self.end_epoch is not None and e >= self.end_epoch):
            return
        if self.staircase:
            if batch == 0:
                self._set_lr(e)
        else:
            self._set_lr(e + batch / self._steps())

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = _lr(self.model.optimizer)


class LearningRateWarmupCallback(LearningRateScheduleCallback):
    """Ramps the learning rate from ``initial_lr / size()`` up to ``initial_lr`` over the first
    ``warmup_epochs`` epochs, batch by batch (Goyal et al., "Accurate, Large Minibatch SGD").

    ``initial_lr`` is the target (already scaled by the number of ranks). At batch ``b`` of
    epoch ``e`` the rate is ``initial_lr / size * (1 + (e + (b + 1) / steps) * (size - 1) /
    warmup_epochs)``, so the last batch of the warmup runs at exactly ``initial_lr``.
    """

    def __init__(self, initial_lr, warmup_epochs=5, momentum_correction=True, steps_per_epoch=None, verbose=0):
        def multiplier(epoch):
            n = size()
            progress = epoch + 1.0 / self._steps()
            return (1.0 + progress * (n - 1) / warmup_epochs) / n

        super().__init__(initial_lr, multiplier, start_epoch=0, end_epoch=warmup_epochs, staircase=False,
                         momentum_correction=momentum_correction, steps_per_epoch=steps_per_epoch)
        self.warmup_epochs = warmup_epochs
        self.verbose = verbose

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.verbose and epoch == self.warmup_epochs - 1:
            lr = _lr(self.model.optimizer)
            print(f"\nEpoch {epoch + 1}: finished gradual learning rate warmup to {lr:g}.")


class BestModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """A ``keras.callbacks.ModelCheckpoint`` that saves only the best model so far (by
    ``monitor``), Horovod's ``BestModelCheckpoint``.

    Horovod leaves ``filepath`` to be set later (its Spark and Ray estimators do); here it may
    be given as ``filepath=`` or assigned to ``.filepath`` before training, and training refuses
    to start while it is unset. Like any checkpoint callback, add it on one rank only (usually
    ``rank() == 0``) unless every rank writes to its own path.
    """

    def __init__(self, monitor="val_loss", verbose=0, save_weights_only=False, mode="auto", save_freq="epoch",
                 filepath=None):
        placeholder = "unset.weights.h5" if save_weights_only else "unset.keras"
        super().__init__(filepath=placeholder if filepath is None else filepath, monitor=monitor,
                         verbose=verbose, save_best_only=True, save_weights_only=save_weights_only, mode=mode,
                         save_freq=save_freq)
        if filepath is None:
            self.filepath = None

    def on_train_begin(self, logs=None):
        if self.filepath is None:
            raise ValueError("BestModelCheckpoint: filepath is not set; pass filepath= or assign .filepath "
                             "before model.fit")
        # Keras checks the file extension in its constructor; a path assigned later gets it here.
        keras.callbacks.ModelCheckpoint(self.filepath, save_weights_only=self.save_weights_only)
        super().on_train_begin(logs)
