"""SyncBatchNormalization: batch normalization whose batch statistics cover every rank's batch."""

import keras
import tensorflow as tf

from hora.common.basics import size
from hora.tensorflow import mpi_ops


class SyncBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose training-time mean and variance are those of
    the global batch (every rank's batch together), as if one process normalized it.

    Each rank sums its element count, sum and sum of squares per channel; one allreduce (Sum)
    adds them up, so ranks may have batches of different sizes. The allreduce is
    differentiable, so the gradient reaching each rank's inputs is that of the global batch.
    Inference uses the moving statistics, which are updated from the global ones and so stay
    equal on every rank. Works eagerly and inside ``tf.function`` (not under XLA). Every rank
    must call the layer in training mode at the same step. ``fused=True`` is refused, as in
    Horovod (there is no fused kernel here).
    """

    def __init__(self, fused=False, **kwargs):
        if fused in (True, None):
            raise ValueError("SyncBatchNormalization does not support fused=True (or None): its statistics "
                             "come from an allreduce, not from a fused kernel")
        if kwargs.get("synchronized"):
            raise ValueError("SyncBatchNormalization: synchronized=True is Keras's tf.distribute "
                             "synchronization; this layer synchronizes over hora's ranks already")
        if not kwargs.get("name"):
            kwargs["name"] = "sync_batch_normalization"
        super().__init__(**kwargs)

    def _moments(self, inputs, mask):
        mean, variance = super()._moments(inputs, mask)
        if size() == 1:
            return mean, variance
        dtype = mean.dtype
        axes = list(self._reduction_axes)
        if mask is None:
            count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(inputs), axes)), dtype)
            count = tf.fill(tf.shape(mean), count)
        else:
            weights = tf.broadcast_to(tf.expand_dims(tf.cast(mask, dtype), -1), tf.shape(inputs))
            count = tf.reshape(tf.reduce_sum(weights, axes), tf.shape(mean))
        count = tf.stop_gradient(count)
        # Sums, not means: a rank with a bigger batch weighs more, as in one global batch.
        local = tf.stack([count, count * mean, count * (variance + tf.square(mean))])
        total = mpi_ops.allreduce(local, op=mpi_ops.Sum)
        n = tf.maximum(total[0], tf.ones_like(total[0]))
        global_mean = total[1] / n
        global_variance = tf.maximum(total[2] / n - tf.square(global_mean), tf.zeros_like(global_mean))
        return global_mean, global_variance
