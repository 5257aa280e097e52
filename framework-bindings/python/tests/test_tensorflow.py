"""hora.tensorflow: every collective and dtype, eagerly and inside tf.function; gradients;
errors; DistributedGradientTape training against a single-process run of the same global batch."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

import hora  # noqa: E402
import hora.tensorflow as hvd  # noqa: E402

DTYPES = [tf.uint8, tf.int8, tf.int32, tf.int64, tf.float16, tf.bfloat16, tf.float32, tf.float64]
FLOATS = [tf.float16, tf.bfloat16, tf.float32, tf.float64]
MODES = ["eager", "graph"]


def rs():
    return hvd.rank(), hvd.size()


def run(mode, fn, *args):
    """Calls fn eagerly, or as a freshly traced tf.function."""
    if mode == "eager":
        return fn(*args)
    return tf.function(fn)(*args)


def np64(t):
    return np.asarray(t.numpy()).astype(np.float64)


def const(values, dtype):
    return tf.constant(np.asarray(values).astype(dtype.as_numpy_dtype), dtype=dtype)


def test_topology_matches_torch_binding():
    import hora.torch as hvt

    assert (hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size()) == (
        hvt.rank(), hvt.size(), hvt.local_rank(), hvt.local_size())
    assert hvd.is_initialized() and hvd.size() >= 2
    assert int(hvd.size_op()) == hvd.size() and int(hvd.rank_op()) == hvd.rank()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_allreduce_sum_every_dtype(mode, dtype):
    r, n = rs()
    base = np.arange(6).reshape(2, 3) % 3
    x = const(base + r, dtype)
    out = run(mode, lambda t: hvd.allreduce(t, op=hvd.Sum, name=f"tf_sum.{dtype.name}.{mode}"), x)
    expected = sum(base + k for k in range(n))
    assert out.dtype == dtype and out.shape == (2, 3)
    np.testing.assert_array_equal(np64(out), expected)
    np.testing.assert_array_equal(np64(x), base + r)  # the input is untouched


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.name)
@pytest.mark.parametrize("op", ["average", "min", "max", "product"])
def test_allreduce_ops(mode, dtype, op):
    r, n = rs()
    rows = np.array([[1.0 + k, 2.0 - k, 0.5 * (k + 1)] for k in range(n)])
    expected = {"average": rows.mean(0), "min": rows.min(0), "max": rows.max(0), "product": rows.prod(0)}[op]
    hop = {"average": hvd.Average, "min": hvd.Min, "max": hvd.Max, "product": hvd.Product}[op]
    out = run(mode, lambda t: hvd.allreduce(t, op=hop), const(rows[r], dtype))
    tol = 2e-2 if dtype in (tf.float16, tf.bfloat16) else 1e-6
    np.testing.assert_allclose(np64(out), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("mode", MODES)
def test_allreduce_default_average_scaling_and_compression(mode):
    r, n = rs()

    def fn(x):
        return (hvd.allreduce(x), hvd.allreduce(x, op=hvd.Sum, prescale_factor=2.0, postscale_factor=0.5),
                hvd.allreduce(tf.ones([3]), op=hvd.Sum, postscale_factor=3.0),
                hvd.allreduce(x, average=False),
                hvd.allreduce(x, compression=hvd.Compression.fp16))

    avg, scaled, post, summed, fp16 = run(mode, fn, tf.fill([5], float(r)))
    np.testing.assert_allclose(avg.numpy(), np.full(5, (n - 1) / 2))
    np.testing.assert_allclose(scaled.numpy(), np.full(5, float(sum(range(n)))))
    np.testing.assert_allclose(post.numpy(), np.full(3, 3.0 * n))
    np.testing.assert_allclose(summed.numpy(), np.full(5, float(sum(range(n)))))
    assert fp16.dtype == tf.float32
    np.testing.assert_allclose(fp16.numpy(), np.full(5, (n - 1) / 2))


def test_allreduce_bad_arguments():
    with pytest.raises(hora.InvalidArgumentError, match="Adasum.*float"):
        hvd.allreduce(tf.ones([2], tf.int32), op=hvd.Adasum)
    with pytest.raises(TypeError, match="complex64 is not supported"):
        hvd.allreduce(tf.ones([2], tf.complex64))
    with pytest.raises(TypeError, match="root_rank"):
        hvd.broadcast(tf.ones([2]), root_rank="0")
    with pytest.raises(ValueError, match="either op or"):
        hvd.allreduce(tf.ones([2]), average=True, op=hvd.Sum)
    # nothing was submitted: the ranks are still in step
    assert hvd.allreduce(tf.ones([2]), op=hvd.Sum).numpy().tolist() == [hvd.size()] * 2


@pytest.mark.parametrize("mode", MODES)
def test_grouped_allreduce_mixed_dtypes(mode):
    r, n = rs()
    xs = [tf.fill([3], float(r)), const([[r, 1], [2, r]], tf.int32), const([r + 1], tf.bfloat16),
          tf.zeros([0, 4], tf.float64)]
    outs = run(mode, lambda *ts: hvd.grouped_allreduce(list(ts), op=hvd.Sum), *xs)
    assert [o.dtype for o in outs] == [x.dtype for x in xs]
    s = sum(range(n))
    np.testing.assert_array_equal(outs[0].numpy(), np.full(3, float(s)))
    np.testing.assert_array_equal(outs[1].numpy(), [[s, n], [2 * n, s]])
    np.testing.assert_array_equal(np64(outs[2]), [s + n])
    assert outs[3].shape == (0, 4)
    avg = run(mode, lambda *ts: hvd.grouped_allreduce(list(ts)), tf.fill([2], float(r)), tf.fill([1], 2.0 * r))
    np.testing.assert_allclose(avg[0].numpy(), np.full(2, s / n))
    np.testing.assert_allclose(avg[1].numpy(), np.full(1, 2 * s / n))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_allgather_ragged_every_dtype(mode, dtype):
    r, n = rs()
    x = const(np.full((r + 1, 2), r), dtype)
    out = run(mode, lambda t: hvd.allgather(t, name=f"tf_gather.{dtype.name}.{mode}"), x)
    expected = np.concatenate([np.full((k + 1, 2), k) for k in range(n)])
    assert out.dtype == dtype and out.shape == expected.shape
    np.testing.assert_array_equal(np64(out), expected)


@pytest.mark.parametrize("mode", MODES)
def test_allgather_scalar_and_empty(mode):
    r, n = rs()
    out = run(mode, lambda t: hvd.allgather(t), tf.constant(float(r)))
    np.testing.assert_array_equal(out.numpy(), np.arange(n, dtype=np.float32))
    rows = 0 if r == 0 else 2
    out = run(mode, lambda t: hvd.allgather(t), tf.ones([rows, 3], tf.int64))
    assert out.shape == (2 * (n - 1), 3)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_broadcast_from_each_root(mode, dtype):
    r, n = rs()
    for root in range(n):
        x = const(np.arange(4).reshape(2, 2) + 10 * r, dtype)
        out = run(mode, lambda t, root=root: hvd.broadcast(t, root, name=f"tf_bcast.{dtype.name}.{root}"), x)
        assert out.dtype == dtype and out.shape == (2, 2)
        np.testing.assert_array_equal(np64(out), np.arange(4).reshape(2, 2) + 10 * root)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_alltoall_even_and_uneven(mode, dtype):
    r, n = rs()
    x = const(np.arange(2 * n) + 10 * r, dtype)
    out = run(mode, lambda t: hvd.alltoall(t), x)
    expected = np.concatenate([np.arange(2 * r, 2 * r + 2) + 10 * k for k in range(n)])
    np.testing.assert_array_equal(np64(out), expected)
    # rank r sends d+1 rows to rank d
    splits = [d + 1 for d in range(n)]
    rows = sum(splits)
    x = const(np.repeat(np.arange(rows)[:, None], 2, axis=1) + 30 * r, dtype)
    out, received = run(mode, lambda t: hvd.alltoall(t, splits=splits), x)
    assert received.numpy().tolist() == [r + 1] * n
    start = sum(splits[:r])
    expected = np.concatenate([np.repeat(np.arange(start, start + r + 1)[:, None], 2, axis=1) + 30 * k
                               for k in range(n)])
    np.testing.assert_array_equal(np64(out), expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_reducescatter_uneven(mode, dtype):
    r, n = rs()
    rows = 2 * n + 1
    base = np.repeat(np.arange(rows)[:, None], 3, axis=1) % 5
    x = const(base + r, dtype)
    out = run(mode, lambda t: hvd.reducescatter(t, op=hvd.Sum), x)
    counts = [rows // n + (1 if k < rows % n else 0) for k in range(n)]
    start = sum(counts[:r])
    full = sum(base + k for k in range(n))
    assert out.dtype == dtype
    np.testing.assert_array_equal(np64(out), full[start : start + counts[r]])
    if dtype.is_floating:
        avg = run(mode, lambda t: hvd.reducescatter(t), x)
        np.testing.assert_allclose(np64(avg), full[start : start + counts[r]] / n, rtol=2e-2)


@pytest.mark.parametrize("mode", MODES)
def test_grouped_allgather_reducescatter_and_in_place_broadcast(mode):
    r, n = rs()

    def fn(a, b):
        return hvd.grouped_allgather([a, b]), hvd.grouped_reducescatter([b], op=hvd.Sum)

    (ga, gb), (rb,) = run(mode, fn, tf.fill([r + 1], r), tf.ones([2 * n, 2]) * (r + 1))
    np.testing.assert_array_equal(ga.numpy(), np.concatenate([np.full(k + 1, k) for k in range(n)]))
    assert gb.shape == (2 * n * n, 2)
    np.testing.assert_array_equal(rb.numpy(), np.full((2, 2), float(sum(k + 1 for k in range(n)))))
    v = tf.Variable([float(r), 1.0])
    if mode == "eager":
        assert hvd.broadcast_([v], root_rank=n - 1)[0] is v
    else:
        tf.function(lambda: (hvd.broadcast_([v], root_rank=n - 1), None)[1])()
    np.testing.assert_array_equal(v.numpy(), [n - 1.0, 1.0])
    assert int(hvd.local_size_op()) == hvd.local_size() and int(hvd.local_rank_op()) == hvd.local_rank()


@pytest.mark.parametrize("mode", MODES)
def test_barrier_and_join_uneven_batches(mode):
    r, n = rs()
    def barrier():
        hvd.barrier()  # in a tf.function, an op that runs because it is stateful

    run(mode, barrier)
    steps = 3 + r  # the last rank has the most batches
    for i in range(steps):
        out = hvd.allreduce(tf.ones([4]), op=hvd.Sum, name=f"tf_uneven.{i}")
        active = sum(1 for k in range(n) if i < 3 + k)
        np.testing.assert_array_equal(out.numpy(), np.full(4, float(active)))
    last = run(mode, lambda: hvd.join())
    assert int(last) == n - 1
    hvd.barrier()


@pytest.mark.parametrize("mode", MODES)
def test_gradients(mode):
    r, n = rs()
    x = tf.constant([1.0 + r, 2.0, 3.0], tf.float64)

    def grads(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            s = tf.reduce_sum(hvd.allreduce(x * x, op=hvd.Sum))
            a = tf.reduce_sum(hvd.allreduce(x * x))
            g = tf.reduce_sum(hvd.allgather(x * x) * tf.cast(tf.range(3 * n), tf.float64))
            b = tf.reduce_sum(hvd.broadcast(x * x, 0) * tf.cast(rank_factor, tf.float64))
        return tape.gradient(s, x), tape.gradient(a, x), tape.gradient(g, x), tape.gradient(b, x)

    rank_factor = r + 1
    gs, ga, gg, gb = run(mode, grads, x)
    xs = x.numpy()
    # d/dx_r of sum_k x_k^2 summed over ranks: the upstream ones are summed over ranks (n each).
    np.testing.assert_allclose(gs.numpy(), n * 2 * xs)
    np.testing.assert_allclose(ga.numpy(), 2 * xs)
    # allgather: rank r's slice has weights 3r..3r+2 on every rank; Horovod averages them.
    np.testing.assert_allclose(gg.numpy(), np.arange(3 * r, 3 * r + 3) * 2 * xs)
    # broadcast: on the root, the average of every rank's upstream (k+1); zero elsewhere.
    expected_b = sum(k + 1 for k in range(n)) / n * 2 * xs if r == 0 else np.zeros(3)
    np.testing.assert_allclose(gb.numpy(), expected_b)


@pytest.mark.parametrize("mode", MODES)
def test_gradients_alltoall_reducescatter(mode):
    r, n = rs()
    x = tf.constant(np.arange(2 * n, dtype=np.float32) + r)

    def grads(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            a = tf.reduce_sum(hvd.alltoall(x) * float(r + 1))
            s = tf.reduce_sum(hvd.reducescatter(x, op=hvd.Sum) * float(r + 1))
        return tape.gradient(a, x), tape.gradient(s, x)

    ga, gs = run(mode, grads, x)
    # alltoall: the rows sent to rank d come back weighted d+1.
    np.testing.assert_allclose(ga.numpy(), np.repeat(np.arange(1, n + 1), 2).astype(np.float32))
    # reducescatter with Sum: Horovod scales the gathered gradient by the number of ranks.
    np.testing.assert_allclose(gs.numpy(), n * np.repeat(np.arange(1, n + 1), 2).astype(np.float32))


@pytest.mark.parametrize("mode", MODES)
def test_mismatched_shapes_raise_on_all_ranks(mode):
    r, n = rs()
    x = tf.ones([3 + r])
    if mode == "eager":
        with pytest.raises(hora.MismatchError) as info:
            hvd.allreduce(x, name="tf_mismatch")
        err = info.value
        assert err.rank == r and err.tensor_name == "allreduce.tf_mismatch"
        # Horovod reports a mismatch with TensorFlow's FAILED_PRECONDITION status.
        assert isinstance(err, tf.errors.FailedPreconditionError) and isinstance(err, RuntimeError)
    else:
        f = tf.function(lambda t: hvd.allreduce(t, name="tf_mismatch"))
        # tf.py_function reports any Python exception but ValueError/TypeError/... as UNKNOWN
        # (TensorFlow's py_func.cc); hora_errors() below gives back the FailedPreconditionError.
        with pytest.raises(tf.errors.OpError) as info:
            f(x)
        assert "MismatchError" in str(info.value) and "tf.allreduce.tf_mismatch" in str(info.value)
        with pytest.raises(hora.MismatchError) as info:
            with hvd.hora_errors():
                f(x)
        err = info.value
        assert isinstance(err, hvd.HorovodInternalError)
        assert isinstance(err, tf.errors.FailedPreconditionError)
        assert err.rank == r and err.tensor_name == "tf.allreduce.tf_mismatch"
    assert "shape" in str(err)
    # in a group too, even where padding to a common size would hide it: [3 + r] vs [3 + r']
    group = lambda a, b: hvd.grouped_allreduce([a, b], name="tf_group_mismatch")  # noqa: E731
    call = group if mode == "eager" else tf.function(group)
    with pytest.raises(hora.MismatchError) as info, hvd.hora_errors():
        call(tf.ones([2]), tf.ones([3 + r]))
    assert info.value.tensor_name.endswith("tf_group_mismatch.1")
    # the job goes on afterwards
    assert hvd.allreduce(tf.ones([2]), op=hvd.Sum).numpy().tolist() == [float(n)] * 2


def test_xla_is_refused_at_trace_time():
    f = tf.function(lambda x: hvd.allreduce(x, op=hvd.Sum), jit_compile=True)
    with pytest.raises(ValueError, match="XLA"):
        f(tf.ones([2]))
    # nothing was submitted: the ranks are still in step
    assert hvd.allreduce(tf.ones([2]), op=hvd.Sum).numpy().tolist() == [float(hvd.size())] * 2


def test_graph_names_agree_even_when_one_rank_traced_more(monkeypatch):
    from hora import _core

    r, n = rs()

    @tf.function
    def f(x):
        return hvd.allreduce(x, op=hvd.Sum), hvd.allgather(x), hvd.grouped_allreduce([x, x])

    if r == 0:  # an extra trace (never run) on one rank only must not shift the names
        f.get_concrete_function(tf.TensorSpec([5], tf.float32))
    seen = []
    real, real_group = _core.enqueue, _core.enqueue_group

    def spy(**kw):
        seen.append(kw["name"])
        return real(**kw)

    def spy_group(**kw):
        seen.extend(m[0] for m in kw["members"])
        return real_group(**kw)

    monkeypatch.setattr(_core, "enqueue", spy)
    monkeypatch.setattr(_core, "enqueue_group", spy_group)
    out = f(tf.fill([3], float(r)))
    monkeypatch.undo()
    np.testing.assert_array_equal(out[0].numpy(), np.full(3, float(sum(range(n)))))
    assert len(seen) == 4 and seen[0].startswith("tf.allreduce.noname"), seen
    assert hvd.allgather_object(seen) == [seen] * n


def test_graph_collectives_run_in_program_order():
    r, n = rs()

    @tf.function
    def many(x):
        # independent of each other: TensorFlow may schedule them in any order unless chained
        return [hvd.allreduce(x + i, op=hvd.Sum) for i in range(8)] + [hvd.allgather(x), hvd.broadcast(x, 0)]

    outs = many(tf.fill([3], float(r)))
    for i in range(8):
        np.testing.assert_array_equal(outs[i].numpy(), np.full(3, float(sum(range(n)) + i * n)))
    graph = many.get_concrete_function(tf.TensorSpec([3], tf.float32)).graph
    ops = [op for op in graph.get_operations() if op.type == "EagerPyFunc"]
    assert len(ops) == 10
    for prev, op in zip(ops, ops[1:]):
        assert prev in op.control_inputs, f"{op.name} does not wait for {prev.name}"


# ------------------------------------------------------------------------------------ training


def init_weights(seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.5, (6, 8)), np.zeros(8), rng.normal(0, 0.5, (8, 3)), np.zeros(3)]


def global_batch(step, n, per_rank=4):
    rng = np.random.default_rng(1000 + step)
    return rng.normal(size=(n * per_rank, 6)), rng.integers(0, 3, n * per_rank)


def loss_fn(ws, x, y):
    h = tf.nn.relu(x @ ws[0] + ws[1])
    logits = h @ ws[2] + ws[3]
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))


def train(ws, steps, distributed, graph, lr=0.1, per_rank=4):
    r, n = rs()

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(ws, x, y)
        if distributed:
            tape = hvd.DistributedGradientTape(tape)
        grads = tape.gradient(loss, ws)
        for w, g in zip(ws, grads):
            w.assign_sub(lr * g)
        return loss

    if graph:
        step = tf.function(step)
    for s in range(steps):
        x, y = global_batch(s, n, per_rank)
        if distributed:
            mine = slice(r * per_rank, (r + 1) * per_rank)
            x, y = x[mine], y[mine]
        step(tf.constant(x), tf.constant(y))
    return [w.numpy() for w in ws]


def identical_on_all_ranks(arrays):
    flat = np.concatenate([a.reshape(-1) for a in arrays])
    gathered = hvd.allgather(tf.constant(flat[None, :])).numpy()
    return all(np.array_equal(gathered[0], gathered[k]) for k in range(hvd.size()))


@pytest.mark.parametrize("mode", MODES)
def test_distributed_gradient_tape_matches_single_process_large_batch(mode):
    steps = 6
    dist = train([tf.Variable(w) for w in init_weights(7)], steps, True, mode == "graph")
    local = train([tf.Variable(w) for w in init_weights(7)], steps, False, mode == "graph")
    assert identical_on_all_ranks(dist)
    start = init_weights(7)
    assert any(not np.allclose(a, b) for a, b in zip(dist, start)), "training did not move the weights"
    for a, b in zip(dist, local):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_broadcast_variables_makes_ranks_agree(mode):
    r, n = rs()
    ws = [tf.Variable(w) for w in init_weights(100 + r)] + [tf.Variable([r, 2 * r], dtype=tf.int32)]
    assert n == 1 or not identical_on_all_ranks([w.numpy() for w in ws[:4]])
    if mode == "eager":
        hvd.broadcast_variables(ws, root_rank=n - 1)
    else:
        @tf.function
        def bcast():
            hvd.broadcast_variables(ws, root_rank=n - 1)  # returns the group of assigns

        bcast()
    expected = init_weights(100 + n - 1)
    for w, e in zip(ws, expected):
        np.testing.assert_array_equal(w.numpy(), e)
    assert ws[4].numpy().tolist() == [n - 1, 2 * (n - 1)]


def test_broadcast_keras_variables_then_train_graph_mode():
    keras = pytest.importorskip("keras")
    r, n = rs()
    keras.utils.set_random_seed(r)  # every rank starts from different weights
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    before = [v.numpy() for v in model.variables]
    hvd.broadcast_variables(model.variables, root_rank=0)
    assert identical_on_all_ranks([v.numpy() for v in model.variables])
    if r == 0:
        assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.variables))

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        tape = hvd.DistributedGradientTape(tape)
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g in zip(model.trainable_variables, grads):
            v.assign_sub(0.1 * g)
        return loss

    losses = []
    for s in range(3):
        x, y = global_batch(s, n)
        losses.append(float(step(tf.constant(x[r * 4 : r * 4 + 4], tf.float32), tf.constant(y[r * 4 : r * 4 + 4]))))
    assert identical_on_all_ranks([v.numpy() for v in model.variables])


@pytest.mark.parametrize("sparse_as_dense", [False, True])
def test_sparse_gradients(sparse_as_dense):
    r, n = rs()
    emb = tf.Variable(tf.ones([n + 1, 2]))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(emb, [r, n]))
    tape = hvd.DistributedGradientTape(tape, sparse_as_dense=sparse_as_dense)
    (g,) = tape.gradient(loss, [emb])
    assert isinstance(g, tf.IndexedSlices) != sparse_as_dense
    expected = np.zeros((n + 1, 2))
    expected[:n] = 1.0 / n
    expected[n] = 1.0
    np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(), expected)


def test_gradient_tape_options():
    r, n = rs()
    ws = [tf.Variable(tf.ones([2]) * (i + 1)) for i in range(4)]
    local = tf.Variable([1.0])
    with tf.GradientTape() as tape:
        loss = sum(tf.reduce_sum(w) * (r + 1) for w in ws) + local[0] * (r + 1)
    tape = hvd.DistributedGradientTape(tape, num_groups=2, gradient_predivide_factor=2.0)
    tape.register_local_source(local)
    grads = tape.gradient(loss, ws + [local])
    mean = sum(k + 1 for k in range(n)) / n
    for g in grads[:4]:
        np.testing.assert_allclose(g.numpy(), [mean, mean], rtol=1e-6)
    # local: not reduced, divided by size() (Horovod's default scale_local_gradients=True)
    np.testing.assert_allclose(grads[4].numpy(), [(r + 1.0) / n], rtol=1e-6)


def test_v1_distributed_optimizer():
    r, n = rs()
    w = tf.Variable([1.0, 2.0])
    x = tf.constant([1.0 + r, 2.0])
    opt = hvd.DistributedOptimizer(tf.compat.v1.train.GradientDescentOptimizer(0.1))
    opt.minimize(lambda: tf.reduce_sum(w * x), var_list=[w])
    mean_x = np.array([1.0 + sum(range(n)) / n, 2.0])
    np.testing.assert_allclose(w.numpy(), np.array([1.0, 2.0]) - 0.1 * mean_x, rtol=1e-6)
    with pytest.raises(TypeError, match="tf.compat.v1.train.Optimizer"):
        hvd.DistributedOptimizer(object())


def test_objects():
    r, n = rs()
    assert hvd.broadcast_object({"a": r, "b": [1, 2]}, root_rank=n - 1) == {"a": n - 1, "b": [1, 2]}
    assert hvd.allgather_object(("rank", r)) == [("rank", k) for k in range(n)]
    # The usual pattern passes None off the root (and objects whose type differs by rank).
    assert hvd.broadcast_object({"a": 1} if r == 0 else None, root_rank=0) == {"a": 1}
    assert hvd.allgather_object(r if r % 2 else str(r)) == [k if k % 2 else str(k) for k in range(n)]


def test_collectives_run_on_a_process_set_eagerly_and_in_a_tf_function():
    r, n = hvd.rank(), hvd.size()
    odd = hvd.add_process_set([k for k in range(n) if k % 2 == 1])
    even = hvd.add_process_set([k for k in range(n) if k % 2 == 0])
    try:
        mine = odd if r % 2 else even
        total = float(sum(mine.ranks))
        out = hvd.allreduce(tf.fill([2], float(r)), op=hvd.Sum, name="tf.ps", process_set=mine)
        assert out.numpy().tolist() == [total] * 2
        g = hvd.allgather(tf.constant([r], tf.int64), name="tf.ps.ag", process_set=mine)
        assert g.numpy().tolist() == mine.ranks
        b = hvd.broadcast(tf.constant([r]), root_rank=mine.ranks[-1], name="tf.ps.bc", process_set=mine)
        assert b.numpy().tolist() == [mine.ranks[-1]]
        assert int(hvd.size_op(process_set=mine)) == len(mine.ranks)
        assert int(hvd.rank_op(process_set=mine)) == mine.ranks.index(r)
        assert int(hvd.process_set_included_op(process_set=mine)) == 1
        other = even if mine is odd else odd
        assert int(hvd.process_set_included_op(process_set=other)) == 0

        @tf.function
        def step(x):
            return hvd.allreduce(x, op=hvd.Sum, name="tf.ps.fn", process_set=mine)

        assert step(tf.ones([3])).numpy().tolist() == [float(len(mine.ranks))] * 3

        w = tf.Variable([1.0])
        with tf.GradientTape() as tape:
            loss = w * float(r)
        tape = hvd.DistributedGradientTape(tape, process_set=mine)
        (grad,) = tape.gradient(loss, [w])
        assert grad.numpy().tolist() == [total / len(mine.ranks)]
        with pytest.raises(hvd.InvalidArgumentError, match="is not in process set"):
            hvd.allreduce(tf.ones([1]), name="tf.ps.other", process_set=other)
        with pytest.raises(hvd.InvalidArgumentError, match="not implemented in this face"):
            hvd.local_rank_op(process_set=mine)
    finally:
        hvd.remove_process_set(even)
        hvd.remove_process_set(odd)
