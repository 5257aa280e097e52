"""Data-parallel training of a small Keras 3 CNN with hora.keras, on synthetic MNIST-like data.

    horovodrun -np 2 .venv/bin/python examples/keras_synthetic.py

Written as a horovod.keras script would be: only the import line differs. Each rank trains on
its own shard of a synthetic 10-class dataset (class templates plus noise, nothing to
download) with model.fit: DistributedOptimizer averages the gradients, the callbacks
broadcast rank 0's initial weights, average the logged metrics over ranks and warm the
learning rate up from lr to lr * size over the first epoch.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import hora.keras as hvd  # noqa: E402


def synthetic_dataset(n, seed):
    """``n`` 28x28 images: a fixed random template per class, noised; one-hot-free labels."""
    templates = np.random.default_rng(1234).normal(size=(10, 28, 28, 1)).astype("float32")
    g = np.random.default_rng(seed)
    labels = g.integers(0, 10, size=n)
    images = templates[labels] + 1.5 * g.normal(size=(n, 28, 28, 1)).astype("float32")
    return images, labels


def make_model():
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 5, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(16, 5, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10),
    ])


class EpochReport(keras.callbacks.Callback):
    """Rank 0 prints the (rank-averaged) metrics and the wall time of each epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if hvd.rank() == 0:
            print(f"epoch {epoch + 1}: loss {logs['loss']:.4f}  accuracy {100 * logs['accuracy']:.1f}%  "
                  f"val loss {logs['val_loss']:.4f}  val accuracy {100 * logs['val_accuracy']:.1f}%  "
                  f"lr {logs['lr']:.4f}  ({time.perf_counter() - self.start:.2f} s, {hvd.size()} ranks)",
                  flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--samples", type=int, default=2048, help="training samples per rank")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--fp16-allreduce", action="store_true")
    args = parser.parse_args()

    hvd.init()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(42 + hvd.rank())  # different on purpose: the broadcast fixes it

    x, y = synthetic_dataset(args.samples, seed=hvd.rank())
    val_x, val_y = synthetic_dataset(512, seed=10_000 + hvd.rank())

    model = make_model()
    compression = hvd.Compression.fp16 if args.fp16_allreduce else hvd.Compression.none
    scaled_lr = args.lr * hvd.size()
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(scaled_lr, momentum=0.5), compression=compression)
    # The collectives run as tf.py_function ops, which XLA cannot compile.
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=False)
    callbacks = [
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        hvd.callbacks.MetricAverageCallback(),
        hvd.callbacks.LearningRateWarmupCallback(initial_lr=scaled_lr, warmup_epochs=1),
        EpochReport(),
    ]
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, validation_data=(val_x, val_y),
              callbacks=callbacks, verbose=0)
    hvd.shutdown()


if __name__ == "__main__":
    main()
