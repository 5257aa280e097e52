"""Synthetic-data training benchmark of a small Keras CNN with hora.tensorflow (TensorFlow 2).

    horovodrun -np 2 .venv/bin/python examples/tensorflow2_synthetic.py
    .venv/bin/python examples/tensorflow2_synthetic.py --no-hora     # one process, no hora

Written as a Horovod TensorFlow 2 script would be (only the import line differs): the training
step is a tf.function with DistributedGradientTape; after the first step (which creates the
optimizer's variables) the model and optimizer variables are broadcast from rank 0. Every rank
trains on its own synthetic images (a fixed template per class plus noise, so the loss has
something to go down on). Prints the loss (averaged over ranks) and images/second per
iteration, then the mean step time. ``--no-hora`` runs the same step in one process without
hora (plain GradientTape), for a side-by-side comparison with the same per-rank batch.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def make_model(seed):
    import keras

    keras.utils.set_random_seed(seed)
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


def synthetic_batches(count, batch, seed):
    """``count`` batches of 28x28 images: a fixed random template per class, plus noise."""
    templates = np.random.default_rng(1234).normal(size=(10, 28, 28, 1)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        labels = rng.integers(0, 10, batch)
        images = templates[labels] + 1.5 * rng.normal(size=(batch, 28, 28, 1)).astype(np.float32)
        out.append((tf.constant(images), tf.constant(labels)))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32, help="images per rank and step")
    parser.add_argument("--num-warmup-batches", type=int, default=5)
    parser.add_argument("--num-batches-per-iter", type=int, default=10)
    parser.add_argument("--num-iters", type=int, default=6)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads per rank")
    parser.add_argument("--inter-op-threads", type=int, default=0, help="TensorFlow inter-op threads (0: its default)")
    parser.add_argument("--eager", action="store_true", help="run the step eagerly, not as a tf.function")
    parser.add_argument("--fp16-allreduce", action="store_true")
    parser.add_argument("--no-hora", action="store_true", help="one process, plain GradientTape")
    args = parser.parse_args()

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    if args.no_hora:
        hvd, rank, size = None, 0, 1
    else:
        import hora.tensorflow as hvd

        hvd.init()
        rank, size = hvd.rank(), hvd.size()

    import keras

    model = make_model(seed=42 + rank)  # different on purpose: the broadcast makes them equal
    opt = keras.optimizers.SGD(args.lr * size, momentum=0.5)
    compression = hvd.Compression.fp16 if hvd and args.fp16_allreduce else None
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        if hvd:
            tape = hvd.DistributedGradientTape(tape, compression=compression or hvd.Compression.none)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    if not args.eager:
        step = tf.function(step)

    total = args.num_warmup_batches + args.num_iters * args.num_batches_per_iter
    batches = synthetic_batches(min(total, 64), args.batch_size, seed=rank)

    def run(i):
        return step(*batches[i % len(batches)])

    run(0)
    if hvd:
        # After the first step, so the optimizer's variables exist (Horovod's first_batch idiom).
        hvd.broadcast_variables(model.variables, root_rank=0)
        hvd.broadcast_variables(opt.variables, root_rank=0)
    for i in range(1, args.num_warmup_batches):
        run(i)

    def log(msg):
        if rank == 0:
            print(msg, flush=True)

    mode = "eager" if args.eager else "tf.function"
    log(f"model: small CNN, batch {args.batch_size} per rank, {size} rank(s), {mode}"
        + ("" if hvd else ", no hora"))
    rates, step_times, iter_losses = [], [], []
    i = args.num_warmup_batches
    for it in range(args.num_iters):
        start = time.perf_counter()
        losses = []
        for _ in range(args.num_batches_per_iter):
            losses.append(run(i))
            i += 1
        loss = float(tf.reduce_mean(tf.stack(losses)))  # waits for the last step
        elapsed = time.perf_counter() - start
        if hvd:
            loss = float(hvd.allreduce(tf.constant(loss), name="loss"))
        rate = args.batch_size * args.num_batches_per_iter / elapsed
        rates.append(rate)
        iter_losses.append(loss)
        step_times.append(elapsed / args.num_batches_per_iter)
        log(f"iter {it}: loss {loss:.4f}  {rate:.1f} img/sec per rank  ({1e3 * step_times[-1]:.1f} ms/step)")
    mean, conf = np.mean(rates), 1.96 * np.std(rates)
    log(f"img/sec per rank: {mean:.1f} +-{conf:.1f}; total on {size} rank(s): {size * mean:.1f} +-{size * conf:.1f}")
    log(f"mean step time: {1e3 * np.mean(step_times):.2f} ms (median {1e3 * np.median(step_times):.2f} ms)")
    if hvd:
        hvd.shutdown()
    if iter_losses[-1] >= iter_losses[0]:
        raise SystemExit(f"the loss did not go down ({iter_losses[0]:.4f} -> {iter_losses[-1]:.4f})")


if __name__ == "__main__":
    main()
