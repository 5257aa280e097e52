"""Grouped allgather / reducescatter of hora.tensorflow as real engine groups, eager and inside
tf.function: values match the single forms and gradients follow Horovod's conventions."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import hora.tensorflow as hvd  # noqa: E402

MODES = ["eager", "graph"]


@pytest.fixture(scope="module", autouse=True)
def tf_init():
    hvd.init()


def run(mode, fn, *args):
    return fn(*args) if mode == "eager" else tf.function(fn)(*args)


@pytest.mark.parametrize("mode", MODES)
def test_grouped_allgather_and_reducescatter_values(mode):
    r, n = hvd.rank(), hvd.size()

    def fn(a, b, c):
        return (hvd.grouped_allgather([a, b, c], name="tf.gag"),
                hvd.grouped_reducescatter([c, b], op=hvd.Sum, name="tf.grs"))

    a = tf.fill([r + 1, 2], r)
    b = tf.ones([2 * n]) * float(r + 1)
    c = tf.reshape(tf.range(3 * n, dtype=tf.float64), [n, 3]) + r
    (ga, gb, gc), (rc, rb) = run(mode, fn, a, b, c)
    np.testing.assert_array_equal(ga.numpy(), np.concatenate([np.full((k + 1, 2), k) for k in range(n)]))
    assert gb.shape == (2 * n * n,) and gc.shape == (n * n, 3)
    total = float(sum(k + 1 for k in range(n)))
    np.testing.assert_array_equal(rb.numpy(), np.full(2, total))
    single = hvd.reducescatter(c, op=hvd.Sum, name=f"tf.grs.single.{mode}")
    np.testing.assert_array_equal(rc.numpy(), single.numpy())
    assert hvd.grouped_allgather([]) == [] and hvd.grouped_reducescatter([]) == []


@pytest.mark.parametrize("mode", MODES)
def test_grouped_gradients_match_the_single_forms(mode):
    r, n = hvd.rank(), hvd.size()
    x = tf.constant([1.0 + r, 2.0, 3.0], tf.float64)
    y = tf.constant(np.arange(2 * n, dtype=np.float64) + r)
    w = tf.cast(tf.range(3 * n), tf.float64) * (r + 1)

    def grads(x, y):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([x, y])
            gx, gs = hvd.grouped_allgather([x * x, tf.reduce_sum(x)])
            g = tf.reduce_sum(gx * w) + tf.reduce_sum(gs * tf.cast(tf.range(n), tf.float64))
            g1 = tf.reduce_sum(hvd.allgather(x * x) * w)
            (rsum,) = hvd.grouped_reducescatter([y * y], op=hvd.Sum, prescale_factor=2.0)
            s = tf.reduce_sum(rsum * (r + 1))
            s1 = tf.reduce_sum(hvd.reducescatter(y * y, op=hvd.Sum, prescale_factor=2.0) * (r + 1))
        return tape.gradient(g, x), tape.gradient(g1, x), tape.gradient(s, y), tape.gradient(s1, y)

    gg, gg1, gr, gr1 = run(mode, grads, x, y)
    xs = x.numpy()
    mean = sum(k + 1 for k in range(n)) / n
    # The gathered x*x is weighted 3r..3r+2 times (k+1) on rank k: averaged over ranks; the
    # gathered scalar sum(x) is weighted r, so each x_i gets r.
    expect = np.arange(3 * r, 3 * r + 3) * mean * 2 * xs + r
    np.testing.assert_allclose(gg.numpy(), expect)
    np.testing.assert_allclose(gg1.numpy() + r, expect)
    np.testing.assert_allclose(gr.numpy(), gr1.numpy())
    ys = y.numpy()
    weights = np.repeat(np.arange(1, n + 1, dtype=np.float64), 2)
    np.testing.assert_allclose(gr.numpy(), 2.0 * n * weights * 2 * ys)


def test_ranks_grouping_differently_fail_on_every_rank():
    r = hvd.rank()
    ts = [tf.ones([2]) for _ in range(3 if r == 0 else 2)]
    with pytest.raises(Exception, match="grouped"):
        hvd.grouped_allgather(ts, name="tf.mismatch")
    out = hvd.grouped_allgather([tf.ones([1])], name="tf.after")
    assert out[0].shape == (hvd.size(),)
