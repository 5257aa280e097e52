"""hora.tensorflow names added for Horovod parity: SyncBatchNormalization, PartialDistributedGradientTape
and scale_local_gradients, broadcast_object_fn, broadcast_global_variables and its hook, run-time
rank/size ops, and the small helpers. Every rank runs the same tests in the same order."""

import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import hora  # noqa: E402
import hora.tensorflow as hvd  # noqa: E402

MODES = ["eager", "graph"]


def rows_of(r, uneven):
    return r + 2 if uneven else 3


def global_input(n, uneven, inner, seed=11):
    counts = [rows_of(k, uneven) for k in range(n)]
    g = np.random.default_rng(seed)
    x = g.normal(loc=1.5, scale=2.0, size=(sum(counts),) + inner)
    w = g.normal(size=x.shape)
    return x, w, counts


def bn_pair(inner):
    """A SyncBatchNormalization and a plain BatchNormalization with equal, non-trivial weights."""
    channels = inner[-1]
    kw = dict(momentum=0.5, epsilon=1e-3, dtype="float64")
    sync, ref = hvd.SyncBatchNormalization(**kw), keras.layers.BatchNormalization(**kw)
    g = np.random.default_rng(3)
    gamma, beta = g.uniform(0.5, 2.0, size=channels), g.normal(size=channels)
    for layer in (sync, ref):
        layer.build((None,) + inner)
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    return sync, ref


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("uneven", [False, True])
@pytest.mark.parametrize("inner", [(4,), (2, 3)])
def test_sync_batch_norm_equals_batch_norm_over_the_global_batch(mode, uneven, inner):
    r, n = hvd.rank(), hvd.size()
    x, w, counts = global_input(n, uneven, inner)
    start = sum(counts[:r])
    mine = slice(start, start + counts[r])
    sync, ref = bn_pair(inner)

    def step(layer, xs, ws):
        with tf.GradientTape() as tape:
            tape.watch(xs)
            y = layer(xs, training=True)
            loss = tf.reduce_sum(y * ws)
        gx, gg, gb = tape.gradient(loss, [xs, layer.gamma, layer.beta])
        return y, gx, gg, gb

    if mode == "graph":
        sync_step, ref_step = tf.function(lambda a, b: step(sync, a, b)), tf.function(lambda a, b: step(ref, a, b))
    else:
        sync_step, ref_step = (lambda a, b: step(sync, a, b)), (lambda a, b: step(ref, a, b))
    y, gx, gg, gb = sync_step(tf.constant(x[mine]), tf.constant(w[mine]))
    ry, rgx, rgg, rgb = ref_step(tf.constant(x), tf.constant(w))

    np.testing.assert_allclose(y.numpy(), ry.numpy()[mine], rtol=1e-9, atol=1e-10)
    # The global loss is the sum of the ranks' losses: the input gradient is the global one...
    np.testing.assert_allclose(gx.numpy(), rgx.numpy()[mine], rtol=1e-8, atol=1e-9)
    # ...and gamma's and beta's, summed over ranks, are those of the global batch.
    for got, want in ((gg, rgg), (gb, rgb)):
        np.testing.assert_allclose(hvd.allreduce(got, op=hvd.Sum).numpy(), want.numpy(), rtol=1e-8, atol=1e-9)
    # Moving statistics come from the global ones, so inference agrees too.
    np.testing.assert_allclose(sync.moving_mean.numpy(), ref.moving_mean.numpy(), rtol=1e-9)
    np.testing.assert_allclose(sync.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=1e-9)
    np.testing.assert_allclose(sync(tf.constant(x[mine]), training=False).numpy(),
                               ref(tf.constant(x), training=False).numpy()[mine], rtol=1e-9, atol=1e-10)


def test_sync_batch_norm_trains_in_model_fit_and_refuses_fused():
    r, n = hvd.rank(), hvd.size()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,), dtype="float64"), keras.layers.Dense(4, dtype="float64"),
                              hvd.SyncBatchNormalization(dtype="float64"), keras.layers.Dense(1, dtype="float64")])
    import hora.keras as hk

    model.compile(optimizer=hk.DistributedOptimizer(keras.optimizers.SGD(0.1)), loss="mse", jit_compile=False)
    g = np.random.default_rng(r)
    x, y = g.normal(size=(8, 3)), g.normal(size=(8, 1))
    before = model.layers[1].gamma.numpy().copy()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    bn = model.layers[1]
    assert not np.allclose(bn.gamma.numpy(), before), "gamma did not train"
    gathered = hvd.allgather(tf.constant(np.concatenate([bn.gamma.numpy(), bn.moving_mean.numpy()])[None])).numpy()
    assert all(np.allclose(gathered[0], gathered[k], rtol=1e-12) for k in range(n))
    for bad in (True, None):
        with pytest.raises(ValueError, match="fused"):
            hvd.SyncBatchNormalization(fused=bad)


def scalar_layer(name):
    layer = keras.layers.Dense(2, use_bias=False, kernel_initializer="ones", dtype="float64", name=name)
    layer.build((None, 1))
    return layer


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [True, False])
def test_partial_tape_keeps_local_layers_local(mode, scale):
    r, n = hvd.rank(), hvd.size()
    shared, local = scalar_layer("shared"), scalar_layer("local")
    x = tf.constant([[r + 1.0]], tf.float64)

    def grads():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(shared(x)) + tf.reduce_sum(local(x))
        tape = hvd.PartialDistributedGradientTape(tape, local_layers=local, scale_local_gradients=scale)
        return tape.gradient(loss, [shared.kernel, local.kernel])

    g_shared, g_local = tf.function(grads)() if mode == "graph" else grads()
    mean = sum(k + 1.0 for k in range(n)) / n
    np.testing.assert_allclose(g_shared.numpy(), [[mean, mean]])
    own = (r + 1.0) / n if scale else r + 1.0
    np.testing.assert_allclose(g_local.numpy(), [[own, own]])
    with pytest.raises(ValueError, match=r"local_layers\[0\]"):
        hvd.PartialDistributedGradientTape(tf.GradientTape(), local_layers=[local.kernel])


def test_register_local_source_scales_sparse_and_splits_gradients():
    r, n = hvd.rank(), hvd.size()
    w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    emb = tf.Variable(tf.ones([3, 2], tf.float64))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(w) * (r + 1) + tf.reduce_sum(tf.gather(emb, [r % 3])) * (r + 1)
    tape = hvd.DistributedGradientTape(tape)
    tape.register_local_source(emb)
    tape.register_local_source(emb)  # registering twice is the same as once
    local, rest = tape.get_local_and_global_gradients(loss, [w, emb])
    assert [s is emb for s, _ in local] == [True] and [s is w for s, _ in rest] == [True]
    g_emb = local[0][1]
    assert isinstance(g_emb, tf.IndexedSlices)
    expected = np.zeros((3, 2))
    expected[r % 3] = (r + 1.0) / n
    np.testing.assert_allclose(tf.convert_to_tensor(g_emb).numpy(), expected)
    mean = sum(k + 1.0 for k in range(n)) / n
    np.testing.assert_allclose(rest[0][1].numpy(), [mean, mean])


@pytest.mark.parametrize("scale", [True, False])
def test_v1_optimizer_register_local_var(scale):
    r, n = hvd.rank(), hvd.size()
    w, u = tf.Variable([1.0]), tf.Variable([1.0])
    opt = hvd.DistributedOptimizer(tf.compat.v1.train.GradientDescentOptimizer(1.0), scale_local_gradients=scale)
    opt.register_local_var(u)
    opt.minimize(lambda: (w[0] + u[0]) * (r + 1), var_list=[w, u])
    mean = sum(k + 1.0 for k in range(n)) / n
    np.testing.assert_allclose(w.numpy(), [1.0 - mean], rtol=1e-6)
    np.testing.assert_allclose(u.numpy(), [1.0 - ((r + 1.0) / n if scale else r + 1.0)], rtol=1e-6)


def test_rank_ops_are_read_when_the_graph_runs():
    r, n = hvd.rank(), hvd.size()
    ps = hvd.add_process_set([0])

    @tf.function
    def topology():
        return (hvd.size_op(ps), hvd.process_set_included_op(ps), hvd.rank_op(), hvd.size_op(),
                hvd.local_rank_op(), hvd.local_size_op())

    got = [int(t) for t in topology()]
    assert got == [1, int(r == 0), r, n, hvd.local_rank(), hvd.local_size()]
    hvd.remove_process_set(ps)
    # The same set object, registered again with other ranks: the traced function must see it.
    ps.ranks = list(range(1, n))
    hvd.add_process_set(ps)
    try:
        got = [int(t) for t in topology()]
        assert got[:2] == [n - 1, int(r != 0)]
        assert topology.experimental_get_tracing_count() == 1
    finally:
        hvd.remove_process_set(ps)


def test_average_compatibility_and_power_of_two():
    assert hvd.handle_average_backwards_compatibility(hvd.Sum, None) == hvd.Sum
    assert hvd.handle_average_backwards_compatibility(None, None) == hvd.Average
    with pytest.warns(DeprecationWarning, match="average"):
        assert hvd.handle_average_backwards_compatibility(None, False) == hvd.Sum
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert hvd.handle_average_backwards_compatibility(None, True) == hvd.Average
    with pytest.raises(ValueError, match="supersedes"):
        hvd.handle_average_backwards_compatibility(hvd.Sum, True)
    assert [k for k in range(10) if hvd.check_num_rank_power_of_2(k)] == [1, 2, 4, 8]
    with pytest.raises(NotImplementedError, match="backward_passes_per_step"):
        hvd.LocalGradientAggregationHelper()
    with pytest.raises(NotImplementedError, match="elastic training"):
        hvd.elastic.run


def test_broadcast_object_fn_eagerly_and_in_a_session():
    r, n = hvd.rank(), hvd.size()
    fn = hvd.broadcast_object_fn(root_rank=n - 1)
    assert fn({"from": r}) == {"from": n - 1}
    assert fn([r] * r) == [n - 1] * (n - 1)  # again, with a payload of another size
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        fn = hvd.broadcast_object_fn(root_rank=0, session=sess)
        assert fn(("graph", r)) == ("graph", 0)
        assert fn(list(range(r + 3))) == [0, 1, 2]
        with pytest.raises(hora.InvalidArgumentError, match="broadcast_object_fn"):
            hvd.broadcast_object("x", session=sess)
    with pytest.raises(hora.InvalidArgumentError, match="session="):
        hvd.broadcast_object("x", session=object())


def test_broadcast_global_variables_and_hook_in_tf1_graphs():
    r, n = hvd.rank(), hvd.size()
    with pytest.raises(RuntimeError, match="eager"):
        hvd.broadcast_global_variables(0)
    with tf.Graph().as_default():
        v = tf.compat.v1.Variable([float(r), 2.0 * r], name="v")
        k = tf.compat.v1.Variable(r, name="k")
        op = hvd.broadcast_global_variables(n - 1)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(op)
            assert sess.run(v).tolist() == [n - 1.0, 2.0 * (n - 1)] and sess.run(k) == n - 1
    with tf.Graph().as_default():
        v = tf.compat.v1.Variable([float(r)], name="v")
        hook = hvd.BroadcastGlobalVariablesHook(0)
        with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as sess:
            assert sess.run(v).tolist() == [0.0]
