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
from hora.tensorflow.gradient_tape import DistributedGradientTape, DistributedOptimizer, PartialDistributedGradientTape
from hora.tensorflow.functions import (
    BroadcastGlobalVariablesHook,
    allgather_object,
    broadcast_,
    broadcast_global_variables,
    broadcast_object,
    broadcast_object_fn,
    broadcast_variables,
)
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
    hora_errors,
    join,
    reducescatter,
)
from hora.tensorflow.topology import (
    check_num_rank_power_of_2,
    handle_average_backwards_compatibility,
    local_rank_op,
    local_size_op,
    process_set_included_op,
    rank_op,
    size_op,
)
from hora.tensorflow.sync_batch_norm import SyncBatchNormalization
from hora.tensorflow import elastic  # noqa: F401  (refuses every name: not implemented)


class LocalGradientAggregationHelper:
    """Not provided: Horovod's internal helper behind ``backward_passes_per_step``."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            "hora.tensorflow.LocalGradientAggregationHelper is not provided (it is Horovod's internal helper "
            "behind backward_passes_per_step); use hora.keras.DistributedOptimizer(backward_passes_per_step=n), "
            "which accumulates gradients locally for n steps")

__all__ = [name for name in dir() if not name.startswith("_")]
