"""hora.keras names added for Horovod parity: PartialDistributedOptimizer and
scale_local_gradients, reducescatter, BroadcastGlobalVariablesCallback(local_variables=),
callbacks.BestModelCheckpoint, and the export list of horovod.keras / horovod.tensorflow.keras.
Every rank runs the same tests in the same order (see conftest.py)."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import hora.keras as hvd  # noqa: E402
import hora.tensorflow.keras as htk  # noqa: E402

FEATURES, ROWS = 3, 4

# horovod.keras' and horovod.tensorflow.keras' exports (Horovod 0.28.1's __init__ files).
HOROVOD_KERAS = """init shutdown size local_size cross_size rank local_rank cross_rank is_initialized
start_timeline stop_timeline mpi_threads_supported mpi_enabled mpi_built gloo_enabled gloo_built nccl_built
ddl_built ccl_built cuda_built rocm_built Average Sum Adasum Compression global_process_set callbacks elastic
DistributedOptimizer PartialDistributedOptimizer broadcast_global_variables allreduce allgather broadcast
reducescatter load_model""".split()
HOROVOD_TF_KERAS = [n for n in HOROVOD_KERAS if n not in ("Adasum", "PartialDistributedOptimizer")] + [
    "ProcessSet", "add_process_set", "remove_process_set"]
HOROVOD_CALLBACKS = ["BroadcastGlobalVariablesCallback", "MetricAverageCallback", "LearningRateScheduleCallback",
                     "LearningRateWarmupCallback", "BestModelCheckpoint"]


def make_model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((FEATURES,), dtype="float64")
    h = keras.layers.Dense(4, activation="tanh", dtype="float64")(inputs)
    out = keras.layers.Dense(2, dtype="float64")(h)
    return keras.Model(inputs, out)


def data(k):
    g = np.random.default_rng(50 + k)
    return g.normal(size=(ROWS, FEATURES)), g.normal(size=(ROWS, 2))


def plain_grads(model, k):
    x, y = data(k)
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, model(x))
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


@pytest.mark.parametrize("how", ["partial", "partial-unscaled", "register"])
def test_local_layers_train_on_their_own_gradients(how):
    r, n = hvd.rank(), hvd.size()
    model = make_model(1)
    start = [v.numpy() for v in model.trainable_variables]
    per_rank = [plain_grads(model, k) for k in range(n)]  # every rank's gradient, computed here
    local_layer = model.layers[-1]
    scale = how != "partial-unscaled"
    if how == "register":
        opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.1))
        for v in local_layer.trainable_weights:
            opt.register_local_var(v)
    else:
        opt = hvd.PartialDistributedOptimizer(keras.optimizers.SGD(0.1), local_layers=[local_layer],
                                              scale_local_gradients=scale)
    model.compile(optimizer=opt, loss="mse", jit_compile=False)
    x, y = data(r)
    model.fit(x, y, batch_size=ROWS, epochs=1, shuffle=False, verbose=0)
    local_ids = {id(v) for v in local_layer.trainable_weights}
    for i, v in enumerate(model.trainable_variables):
        if id(v) in local_ids:
            g = per_rank[r][i] / (n if scale else 1)
        else:
            g = sum(p[i] for p in per_rank) / n
        # Keras computes the loss of fit() in floatx (float32): agreement to ~1e-7, while a
        # wrongly scaled or reduced gradient is off by a factor of the order of size().
        np.testing.assert_allclose(v.numpy(), start[i] - 0.1 * g, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="local_layers"):
        hvd.PartialDistributedOptimizer(keras.optimizers.SGD(0.1), local_layers=["not a layer"])
    with pytest.raises(ValueError, match="Average or Sum"):
        hvd.PartialDistributedOptimizer(keras.optimizers.SGD(0.1), op=hvd.Adasum)


def test_reducescatter_value():
    r, n = hvd.rank(), hvd.size()
    value = np.arange(2 * n, dtype=np.float64).reshape(n, 2) * (r + 1)
    got = hvd.reducescatter(value, op=hvd.Sum)
    total = sum(k + 1 for k in range(n))
    np.testing.assert_allclose(got, np.arange(2 * n, dtype=np.float64).reshape(n, 2)[r : r + 1] * total)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(htk.reducescatter(value), got / n)  # default: Average


def test_broadcast_callback_leaves_local_variables_alone():
    r, n = hvd.rank(), hvd.size()
    model = make_model(10 + r)
    mine = model.layers[-1].kernel
    before = mine.numpy().copy()
    cb = hvd.callbacks.BroadcastGlobalVariablesCallback(0, device="cpu:0", local_variables=mine)
    model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.SGD(0.0)), loss="mse", jit_compile=False)
    x, y = data(r)
    model.fit(x, y, batch_size=ROWS, epochs=1, verbose=0, callbacks=[cb])
    np.testing.assert_array_equal(mine.numpy(), before)  # lr 0: only a broadcast could change it
    others = np.concatenate([v.numpy().ravel() for v in model.variables if v is not mine])
    gathered = hvd.allgather(others[None])
    assert all(np.array_equal(gathered[0], gathered[k]) for k in range(n))
    kernels = hvd.allgather(mine.numpy().ravel()[None])
    assert n == 1 or not np.array_equal(kernels[0], kernels[1])
    with pytest.raises(ValueError, match=r"local_variables\[0\]"):
        hvd.callbacks.BroadcastGlobalVariablesCallback(0, local_variables=[np.zeros(2)])


# Keras' own weight saving trips NumPy 2's copy= deprecation (as in test_keras.py's load_model test).
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_best_model_checkpoint_saves_only_improvements(tmp_path):
    r, n = hvd.rank(), hvd.size()
    path = str(tmp_path / f"best-{r}.weights.h5")
    ckpt = hvd.callbacks.BestModelCheckpoint(monitor="loss", save_weights_only=True, filepath=path)
    assert ckpt.save_best_only
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((logs["loss"], [w.copy() for w in self.model.get_weights()]))

    model = make_model(3)
    # A learning rate this large makes the loss go up and down: the file must keep the best epoch.
    model.compile(optimizer=hvd.DistributedOptimizer(keras.optimizers.SGD(2.5)), loss="mse", jit_compile=False)
    x, y = data(r)
    model.fit(x, y, batch_size=ROWS, epochs=4, verbose=0, callbacks=[ckpt, Watch()])
    losses = [loss for loss, _ in seen]
    best = int(np.argmin(losses))
    assert best < len(losses) - 1, f"the loss only fell ({losses}): the test shows nothing"
    restored = make_model(4)
    restored.load_weights(path)
    for got, want in zip(restored.get_weights(), seen[best][1]):
        np.testing.assert_array_equal(got, want)
    assert ckpt.best == pytest.approx(losses[best])
    unset = htk.callbacks.BestModelCheckpoint(monitor="loss")
    assert unset.filepath is None
    with pytest.raises(ValueError, match="filepath is not set"):
        model.fit(x, y, batch_size=ROWS, epochs=1, verbose=0, callbacks=[unset])
    unset.filepath = str(tmp_path / f"later-{r}.keras")
    model.fit(x, y, batch_size=ROWS, epochs=1, verbose=0, callbacks=[unset])
    assert os.path.exists(unset.filepath)


def test_exports_match_horovod():
    assert [m for m in HOROVOD_KERAS if not hasattr(hvd, m)] == []
    assert [m for m in HOROVOD_TF_KERAS if not hasattr(htk, m)] == []
    for module in (hvd.callbacks, htk.callbacks):
        assert [m for m in HOROVOD_CALLBACKS if not hasattr(module, m)] == []
    for module in (hvd, htk):
        with pytest.raises(NotImplementedError, match="elastic training"):
            module.elastic.KerasState


def test_load_model_refuses_legacy_optimizers(tmp_path):
    with pytest.raises(ValueError, match="legacy"):
        hvd.load_model(str(tmp_path / "never-read.keras"), legacy_opts=True)


def test_device_arguments_are_accepted():
    model = make_model(5)
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.1), device_dense="/cpu:0", device_sparse="/cpu:0")
    model.compile(optimizer=opt, loss="mse", jit_compile=False)
    x, y = data(hvd.rank())
    model.fit(x, y, batch_size=ROWS, epochs=1, verbose=0,
              callbacks=[hvd.callbacks.BroadcastGlobalVariablesCallback(0, device="/cpu:0"),
                         hvd.callbacks.MetricAverageCallback(device="/cpu:0")])
    assert int(opt.iterations.numpy()) == 1
