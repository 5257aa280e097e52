"""hora.keras: DistributedOptimizer inside model.fit, the callbacks, and the value helpers.

Every rank runs the same tests in the same order (see conftest.py). Models are float64 so a
distributed fit can be compared with a single-process fit on the same global batches.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import hora  # noqa: E402
import hora.keras as hvd  # noqa: E402

try:  # one thread per rank: two or three ranks share two cores
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # TensorFlow already started (another test module ran first)
    pass

FEATURES, PER_RANK = 6, 4


@pytest.fixture(autouse=True, scope="module")
def float64_everywhere():
    """Keras computes losses (and so the first backward step) in floatx; float64 there keeps the
    distributed and single-process runs equal to ~1e-12 instead of float32's ~1e-7."""
    before, before_policy = keras.backend.floatx(), keras.config.dtype_policy()
    keras.backend.set_floatx("float64")
    # Keras keeps the global dtype policy made at its first layer: once another module has built
    # a float32 layer, floatx alone leaves dtype-less layers (Flatten) computing in float32.
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_dtype_policy(before_policy)
    keras.backend.set_floatx(before)


def make_model(seed, hidden=5):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((FEATURES,), dtype="float64")
    h = keras.layers.Dense(hidden, activation="tanh", dtype="float64")(inputs)
    out = keras.layers.Dense(2, dtype="float64")(h)
    return keras.Model(inputs, out)


def global_data(batches, n, per_rank=PER_RANK, seed=7):
    """``batches`` global batches of ``n * per_rank`` rows each, the same on every rank."""
    g = np.random.default_rng(seed)
    x = g.normal(size=(batches * n * per_rank, FEATURES))
    y = np.stack([np.sin(x[:, 0] + x[:, 1]), x[:, 2] * x[:, 3]], axis=1)
    return x, y


def shard(a, n, r, per_rank=PER_RANK):
    """Rank r's rows: its slice of each global batch, in batch order."""
    return a.reshape(-1, n, per_rank, *a.shape[1:])[:, r].reshape(-1, *a.shape[1:])


def flat_weights(model):
    return np.concatenate([w.ravel() for w in model.get_weights()])


def assert_same_on_all_ranks(values):
    gathered = hvd.allgather(values[None, :])
    for k in range(hvd.size()):
        assert np.array_equal(gathered[0], gathered[k]), f"rank {k} differs from rank 0"


class Recorder(keras.callbacks.Callback):
    """Remembers the learning rate each batch ran with and the epoch logs as it saw them."""

    def __init__(self):
        super().__init__()
        self.lrs, self.logs = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.lrs.append(float(self.model.optimizer.learning_rate.numpy()))

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))


# ------------------------------------------------------------------------ DistributedOptimizer


@pytest.mark.parametrize("mode", ["graph", "eager", "graph-steps2", "adam", "groups", "predivide"])
def test_fit_matches_single_process_large_batch(mode):
    r, n = hvd.rank(), hvd.size()
    model = make_model(seed=100 + r)  # different on purpose: the broadcast must fix it
    hvd.broadcast_global_variables(0, model=model)
    reference = make_model(seed=0)
    reference.set_weights(model.get_weights())

    def optimizer():
        return keras.optimizers.Adam(0.01) if mode == "adam" else keras.optimizers.SGD(0.1)

    kw = {"groups": {"num_groups": 2}, "predivide": {"gradient_predivide_factor": float(n)}}.get(mode, {})
    opt = hvd.DistributedOptimizer(optimizer(), **kw)
    assert isinstance(opt, type(optimizer()))
    model.compile(optimizer=opt, loss="mse", run_eagerly=(mode == "eager"), jit_compile=False,
                  steps_per_execution=2 if mode == "graph-steps2" else 1)
    reference.compile(optimizer=optimizer(), loss="mse", jit_compile=False)

    x, y = global_data(batches=4, n=n)
    model.fit(shard(x, n, r), shard(y, n, r), batch_size=PER_RANK, epochs=2, shuffle=False, verbose=0)
    reference.fit(x, y, batch_size=n * PER_RANK, epochs=2, shuffle=False, verbose=0)

    assert int(opt.iterations.numpy()) == 8
    assert_same_on_all_ranks(flat_weights(model))
    np.testing.assert_allclose(flat_weights(model), flat_weights(reference), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", ["graph", "eager"])
def test_backward_passes_per_step_accumulates_locally(mode):
    r, n = hvd.rank(), hvd.size()
    model = make_model(seed=1)
    reference = make_model(seed=1)
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.1), backward_passes_per_step=2,
                                   average_aggregated_gradients=True)
    model.compile(optimizer=opt, loss="mse", jit_compile=False, run_eagerly=(mode == "eager"))
    reference.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=False)
    # Two local batches of PER_RANK rows make one update; the reference sees all of them at once.
    x, y = global_data(batches=3, n=n, per_rank=2 * PER_RANK)
    model.fit(shard(x, n, r, 2 * PER_RANK), shard(y, n, r, 2 * PER_RANK), batch_size=PER_RANK, epochs=1,
              shuffle=False, verbose=0)
    reference.fit(x, y, batch_size=2 * n * PER_RANK, epochs=1, shuffle=False, verbose=0)
    assert int(opt.iterations.numpy()) == 3  # updates, not batches
    assert_same_on_all_ranks(flat_weights(model))
    np.testing.assert_allclose(flat_weights(model), flat_weights(reference), rtol=1e-9, atol=1e-12)


def test_sum_op_and_fp16_compression():
    r, n = hvd.rank(), hvd.size()
    model = make_model(seed=2)
    reference = make_model(seed=2)
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.05), op=hvd.Sum, compression=hvd.Compression.fp16)
    model.compile(optimizer=opt, loss="mse", jit_compile=False)
    reference.compile(optimizer=keras.optimizers.SGD(0.05 * n), loss="mse", jit_compile=False)
    x, y = global_data(batches=3, n=n)
    model.fit(shard(x, n, r), shard(y, n, r), batch_size=PER_RANK, epochs=1, shuffle=False, verbose=0)
    reference.fit(x, y, batch_size=n * PER_RANK, epochs=1, shuffle=False, verbose=0)
    assert_same_on_all_ranks(flat_weights(model))
    # Sum of per-rank mean gradients with lr = n * lr of the mean: equal up to float16 rounding.
    np.testing.assert_allclose(flat_weights(model), flat_weights(reference), rtol=2e-2, atol=2e-3)
    assert not np.allclose(flat_weights(model), flat_weights(make_model(seed=2)))


@pytest.mark.parametrize("sparse_as_dense", [False, True])
def test_embedding_gradients_sparse_and_dense(sparse_as_dense):
    r, n = hvd.rank(), hvd.size()

    def make(seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((3,), dtype="int32")
        e = keras.layers.Embedding(10, 4, dtype="float64")(inputs)
        return keras.Model(inputs, keras.layers.Dense(2, dtype="float64")(keras.layers.Flatten()(e)))

    model, reference = make(10), make(10)
    g = np.random.default_rng(11)
    x = g.integers(0, 10, size=(3 * n * PER_RANK, 3)).astype(np.int32)
    y = g.normal(size=(3 * n * PER_RANK, 2))
    with tf.GradientTape() as tape:  # the embedding's gradient is sparse: the allgather path
        loss = keras.ops.mean((model(x[:PER_RANK]) - y[:PER_RANK]) ** 2)
    assert isinstance(tape.gradient(loss, model.trainable_variables)[0], tf.IndexedSlices)
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.2), sparse_as_dense=sparse_as_dense)
    model.compile(optimizer=opt, loss="mse", jit_compile=False)
    reference.compile(optimizer=keras.optimizers.SGD(0.2), loss="mse", jit_compile=False)
    model.fit(shard(x, n, r), shard(y, n, r), batch_size=PER_RANK, epochs=1, shuffle=False, verbose=0)
    reference.fit(x, y, batch_size=n * PER_RANK, epochs=1, shuffle=False, verbose=0)
    assert_same_on_all_ranks(flat_weights(model))
    np.testing.assert_allclose(flat_weights(model), flat_weights(reference), rtol=1e-9, atol=1e-12)


def test_xla_step_is_refused_with_advice():
    model = make_model(seed=3)
    model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.SGD(0.1)), loss="mse", jit_compile=True)
    x, y = global_data(batches=1, n=1)
    with pytest.raises(ValueError, match="jit_compile=False"):
        model.fit(x, y, batch_size=PER_RANK, epochs=1, verbose=0)


def test_rank_dependent_shapes_raise_instead_of_hanging():
    r, n = hvd.rank(), hvd.size()
    x, y = global_data(batches=1, n=1)
    for mode in ("graph", "eager"):
        model = make_model(seed=4, hidden=3 + r)
        model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.SGD(0.1)), loss="mse",
                      jit_compile=False, run_eagerly=(mode == "eager"))
        # fit runs the step in a tf.function, whose failed op surfaces as a tf.errors.OpError;
        # hora_errors() turns it back into the engine's exception.
        with pytest.raises(hora.MismatchError) as info, hvd.hora_errors():
            model.fit(x, y, batch_size=PER_RANK, epochs=1, verbose=0)
        assert "shape" in str(info.value), str(info.value)
    model = make_model(seed=4, hidden=3 + r)
    model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.SGD(0.1)), loss="mse", jit_compile=False)
    with pytest.raises(tf.errors.OpError) as info:
        model.fit(x, y, batch_size=PER_RANK, epochs=1, verbose=0)
    assert isinstance(hvd.engine_error(info.value), hora.MismatchError)
    # The engine is still usable afterwards.
    assert hvd.allreduce(np.float64(r), op=hvd.Sum) == sum(range(n))


# Keras 3.15's own saving code trips NumPy 2's __array__(copy=) deprecation.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_load_model_keeps_state_and_distributes():
    r, n = hvd.rank(), hvd.size()
    model = make_model(seed=5)
    model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.SGD(0.1, momentum=0.9)), loss="mse",
                  jit_compile=False)
    x, y = global_data(batches=2, n=n)
    model.fit(shard(x, n, r), shard(y, n, r), batch_size=PER_RANK, epochs=1, shuffle=False, verbose=0)
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"hora_keras_{os.getpid()}_{r}.keras")
    try:
        model.save(path)
        plain = keras.models.load_model(path)  # loads without hora as the plain optimizer
        assert type(plain.optimizer) is keras.optimizers.SGD
        loaded = hvd.load_model(path)
    finally:
        os.remove(path)
    opt = loaded.optimizer
    assert isinstance(opt, keras.optimizers.SGD) and type(opt) is not keras.optimizers.SGD
    assert int(opt.iterations.numpy()) == 2
    for a, b in zip(opt.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Training on per-rank data keeps the ranks in step only if gradients are averaged.
    loaded.fit(shard(x, n, r), shard(y, n, r), batch_size=PER_RANK, epochs=1, shuffle=False, verbose=0)
    assert_same_on_all_ranks(flat_weights(loaded))


def test_tensorflow_keras_alias():
    import hora.tensorflow.keras as tfk

    assert tfk.DistributedOptimizer is hvd.DistributedOptimizer
    assert tfk.callbacks.MetricAverageCallback is hvd.callbacks.MetricAverageCallback
    # hora.tensorflow.DistributedOptimizer hands Keras optimizers to hora.keras.
    import hora.tensorflow as htf

    opt = htf.DistributedOptimizer(keras.optimizers.Adam(0.01), backward_passes_per_step=2)
    assert isinstance(opt, keras.optimizers.Adam) and opt._hora.backward_passes_per_step == 2


# ---------------------------------------------------------------------------------- values


def test_value_collectives():
    r, n = hvd.rank(), hvd.size()
    assert hvd.allreduce(np.float64(r + 1)) == pytest.approx((n + 1) / 2)
    np.testing.assert_array_equal(hvd.allreduce(np.arange(3) * (r + 1), op=hvd.Max), np.arange(3) * n)
    got = hvd.allgather(np.full((r + 1, 2), r, dtype=np.int32))
    assert got.shape == (n * (n + 1) // 2, 2)
    assert got[:, 0].tolist() == [k for k in range(n) for _ in range(k + 1)]
    np.testing.assert_array_equal(hvd.broadcast(np.array([r, 2 * r], dtype=np.float32), n - 1),
                                  [n - 1, 2 * (n - 1)])


# ------------------------------------------------------------------------------- callbacks


def test_broadcast_global_variables_without_model():
    r, n = hvd.rank(), hvd.size()
    model = make_model(seed=300 + r)
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.1, momentum=0.9))
    opt.build(model.trainable_variables)
    for m in opt.momentums:
        m.assign(tf.fill(m.shape, tf.constant(float(r), m.dtype)))
    hvd.broadcast_global_variables(n - 1)  # every built DistributedOptimizer's variables
    assert_same_on_all_ranks(flat_weights(model))
    assert all(np.all(m.numpy() == n - 1) for m in opt.momentums)


def test_broadcast_callback_makes_initial_weights_agree():
    r, n = hvd.rank(), hvd.size()
    model = make_model(seed=200 + r)
    before = hvd.allgather(flat_weights(model)[None, :])
    assert not np.array_equal(before[0], before[n - 1])
    reference = make_model(seed=200 + n - 1)  # the root's initial weights
    np.testing.assert_array_equal(flat_weights(reference), before[n - 1])
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.1, momentum=0.5))
    model.compile(optimizer=opt, loss="mse", jit_compile=False)
    reference.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.5), loss="mse", jit_compile=False)
    x, y = global_data(batches=3, n=n)
    model.fit(shard(x, n, r), shard(y, n, r), batch_size=PER_RANK, epochs=1, shuffle=False, verbose=0,
              callbacks=[hvd.callbacks.BroadcastGlobalVariablesCallback(n - 1)])
    reference.fit(x, y, batch_size=n * PER_RANK, epochs=1, shuffle=False, verbose=0)
    # Every step, the first included, ran from the root's weights: the run equals the reference.
    assert_same_on_all_ranks(flat_weights(model))
    np.testing.assert_allclose(flat_weights(model), flat_weights(reference), rtol=1e-9, atol=1e-12)


def test_broadcast_callback_on_a_model_built_by_its_first_step():
    r, n = hvd.rank(), hvd.size()
    keras.utils.set_random_seed(400 + r)
    model = keras.Sequential([keras.layers.Dense(3, dtype="float64"), keras.layers.Dense(2, dtype="float64")])
    assert not model.built  # no input shape: Keras builds it while tracing the first step
    model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.SGD(0.0)), loss="mse", jit_compile=False)
    x, y = global_data(batches=2, n=n)
    model.fit(shard(x, n, r), shard(y, n, r), batch_size=PER_RANK, epochs=1, verbose=0,
              callbacks=[hvd.callbacks.BroadcastGlobalVariablesCallback(0)])
    assert_same_on_all_ranks(flat_weights(model))


def test_metric_average_callback_logs_the_mean():
    r, n = hvd.rank(), hvd.size()
    model = make_model(seed=6)
    model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.SGD(0.05)), loss="mse",
                  metrics=["mae"], jit_compile=False)
    local, averaged = Recorder(), Recorder()
    x, y = global_data(batches=3, n=n)
    y = y * (1 + r)  # per-rank losses differ a lot
    history = model.fit(shard(x, n, r), shard(y, n, r), batch_size=PER_RANK, epochs=2, shuffle=False, verbose=0,
                        callbacks=[local, hvd.callbacks.MetricAverageCallback(), averaged])
    for epoch in range(2):
        mine = np.array([local.logs[epoch]["loss"], local.logs[epoch]["mae"]])
        every = hvd.allgather(mine[None, :])
        assert not np.allclose(every[0], every[n - 1])
        got = np.array([averaged.logs[epoch]["loss"], averaged.logs[epoch]["mae"]])
        np.testing.assert_allclose(got, every.mean(axis=0), rtol=1e-12)
        assert_same_on_all_ranks(got)
        assert history.history["loss"][epoch] == averaged.logs[epoch]["loss"]


def test_warmup_ramps_per_batch_from_lr_over_size():
    n = hvd.size()
    steps, warmup, target = 4, 2, 0.4
    model = make_model(seed=7)
    model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.SGD(target)), loss="mse", jit_compile=False)
    rec = Recorder()
    x, y = global_data(batches=steps, n=1)
    history = model.fit(x, y, batch_size=PER_RANK, epochs=3, shuffle=False, verbose=0,
                        callbacks=[hvd.callbacks.LearningRateWarmupCallback(target, warmup_epochs=warmup), rec])
    expected = [target / n * (1 + (e + (b + 1) / steps) * (n - 1) / warmup) for e in range(warmup)
                for b in range(steps)]
    expected += [expected[-1]] * steps  # after the warmup the rate is left alone
    np.testing.assert_allclose(rec.lrs, expected, rtol=1e-6)
    assert expected[0] == pytest.approx(target / n * (1 + (n - 1) / (steps * warmup)))
    assert expected[-1] == pytest.approx(target)
    np.testing.assert_allclose(history.history["lr"], [expected[steps - 1], target, target], rtol=1e-6)


def test_warmup_momentum_correction_scales_the_velocity():
    # One rank's arithmetic (no reduction involved): SGD with momentum 0.9 under the warmup.
    n = hvd.size()
    steps, warmup, target, mu = 3, 1, 0.3, 0.9
    model = make_model(seed=8)
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(target, momentum=mu))
    model.compile(optimizer=opt, loss="mse", jit_compile=False)
    opt.build(model.trainable_variables)  # Keras would build it while tracing the first step

    class Velocity(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.before, self.after = [], []

        def on_train_batch_begin(self, batch, logs=None):
            self.before.append([m.numpy().copy() for m in opt.momentums])

        def on_train_batch_end(self, batch, logs=None):
            self.after.append([m.numpy().copy() for m in opt.momentums])

    warm = hvd.callbacks.LearningRateWarmupCallback(target, warmup_epochs=warmup)
    vel, rec = Velocity(), Recorder()
    x, y = global_data(batches=steps, n=1)
    # The velocity is recorded after the warmup callback has rescaled it for the coming batch.
    model.fit(x, y, batch_size=PER_RANK, epochs=1, shuffle=False, verbose=0, callbacks=[warm, vel, rec])
    for b in range(1, steps):
        ratio = rec.lrs[b] / rec.lrs[b - 1]
        assert ratio != pytest.approx(1.0) or n == 1
        for seen, prev in zip(vel.before[b], vel.after[b - 1]):
            np.testing.assert_allclose(seen, prev * ratio, rtol=1e-12)


def test_schedule_callback_constant_and_smooth():
    steps, base = 3, 0.2
    x, y = global_data(batches=steps, n=1)

    model = make_model(seed=9)
    model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.SGD(base)), loss="mse", jit_compile=False)
    rec = Recorder()
    sched = hvd.callbacks.LearningRateScheduleCallback(1.0, 0.5, start_epoch=1, end_epoch=3)
    model.fit(x, y, batch_size=PER_RANK, epochs=4, shuffle=False, verbose=0, callbacks=[sched, rec])
    assert rec.lrs == pytest.approx([base] * steps + [0.5] * (3 * steps))

    model = make_model(seed=9)
    model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.SGD(base)), loss="mse", jit_compile=False)
    rec = Recorder()

    def decay(epoch):
        return 0.5 ** epoch

    stair = hvd.callbacks.LearningRateScheduleCallback(0.8, decay, start_epoch=1, staircase=True)
    smooth = hvd.callbacks.LearningRateScheduleCallback(0.8, decay, start_epoch=1, staircase=False)
    for cb, expect in [
        (stair, [base] * steps + [0.8 * decay(e) for e in (1, 2) for _ in range(steps)]),
        (smooth, [0.8 * decay(e + b / steps) for e in (0, 1, 2) for b in range(steps)]),
    ]:
        model.optimizer.learning_rate = base
        rec = Recorder()
        model.fit(x, y, batch_size=PER_RANK, epochs=3, shuffle=False, verbose=0, callbacks=[cb, rec])
        if cb is smooth:  # epoch 0 is before start_epoch
            expect[:steps] = [base] * steps
        np.testing.assert_allclose(rec.lrs, expect, rtol=1e-6)


def test_a_distributed_optimizer_on_a_process_set_averages_among_its_ranks():
    r, n = hvd.rank(), hvd.size()
    first = hvd.add_process_set([0])
    rest = hvd.add_process_set(list(range(1, n)))
    try:
        mine = first if r == 0 else rest
        opt = hvd.DistributedOptimizer(keras.optimizers.SGD(1.0), process_set=mine)
        v = keras.Variable([0.0])
        opt.apply([tf.constant([float(r)])], [v])
        want = -sum(mine.ranks) / len(mine.ranks)
        assert v.numpy().tolist() == pytest.approx([want])
    finally:
        hvd.remove_process_set(rest)
        hvd.remove_process_set(first)
