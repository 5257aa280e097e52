"""hora.tensorflow: a drop-in for ``horovod.tensorflow`` (TensorFlow 2, CPU).

    import hora.tensorflow as hvd
    hvd.init()
    with tf.GradientTape() as tape:
        loss = ...
    tape = hvd.DistributedGradientTape(tape)
    grads = tape.gradient(loss, model.trainable_variables)
    ...
    hvd.broadcast_variables(model.variables, root_rank=0)   # after the first step

Works eagerly and inside ``tf.function`` (as ``tf.py_function`` ops, so not under XLA).
"""

try:
    import tensorflow as _tf  # noqa: F401
except ImportError as _e:  # pragma: no cover - exercised in a TensorFlow-less interpreter
    raise ImportError(
        "hora.tensorflow needs TensorFlow, which is not installed in this Python "
        "(pip install tensorflow-cpu); the rest of hora imports without it"
    ) from _e

from hora.common.api import *  # noqa: F401,F403  (process-level calls, exceptions)
from hora.tensorflow.compression import Compression
from hora.tensorflow.gradient_tape import DistributedGradientTape, DistributedOptimizer
from hora.tensorflow.functions import allgather_object, broadcast_, broadcast_object, broadcast_variables
from hora.tensorflow.mpi_ops import (
    Adasum,
    Average,
    Max,
    Min,
    Product,
    ReduceOp,
    Sum,
    allgather,
    allreduce,
    alltoall,
    barrier,
    broadcast,
    engine_error,
    grouped_allgather,
    grouped_allreduce,
    grouped_reducescatter,
    local_rank_op,
    local_size_op,
    hora_errors,
    process_set_included_op,
    join,
    rank_op,
    reducescatter,
    size_op,
)

__all__ = [name for name in dir() if not name.startswith("_")]
