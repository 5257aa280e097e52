"""The 16-bit integers and bool in hora.torch and hora.tensorflow: every element-wise op at any rank
count, gather and broadcast; integer Average and scale factors as Horovod computes them (in float64,
truncated toward zero); bool refuses Average and scale factors on every rank."""

import os

import numpy as np
import pytest
import torch

import hora
import hora.torch as hvd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
try:
    import tensorflow as tf

    import hora.tensorflow as htf
except ImportError:
    tf = htf = None

needs_tf = pytest.mark.skipif(tf is None, reason="TensorFlow is not installed")

OPS = {"sum": hvd.Sum, "min": hvd.Min, "max": hvd.Max, "product": hvd.Product}
NP_INTS = {"int16": np.int16, "uint16": np.uint16}


def rs():
    return hvd.rank(), hvd.size()


def int_rows(npdt, n):
    """Per-rank rows that overflow a 16-bit sum and product, with signs where the type has them."""
    base = np.array([30000, -7, 3, 0, 2], dtype=np.int64) if npdt == np.int16 else \
        np.array([60000, 7, 3, 0, 2], dtype=np.int64)
    return [(base * (k + 1) + k).astype(npdt) for k in range(n)]


def int_expected(rows, op):
    a = np.stack(rows)
    # numpy reduces arrays of a 16-bit type with wrap-around, as the engine does
    return {"sum": np.add.reduce(a, axis=0, dtype=a.dtype), "product": np.multiply.reduce(a, axis=0, dtype=a.dtype),
            "min": a.min(0), "max": a.max(0)}[op]


def bool_rows(n):
    # column 0 true nowhere, column 1 on rank 0 only, column 2 on every rank, column 3 on all but rank 0
    return [np.array([False, k == 0, True, k != 0]) for k in range(n)]


def bool_expected(rows, op):
    a = np.stack(rows)
    return a.any(0) if op in ("sum", "max") else a.all(0)


def torch_dtype(name):
    if name == "uint16" and not hasattr(torch, "uint16"):
        pytest.skip("this torch has no uint16")
    return getattr(torch, name)


def to_numpy(t):
    # torch.uint16 has few kernels; its bytes are read through int16
    if t.dtype == getattr(torch, "uint16", None):
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def from_numpy(a, dtype):
    if dtype == getattr(torch, "uint16", None):
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.uint16)
    return torch.from_numpy(a.copy())


@pytest.mark.parametrize("name", ["int16", "uint16"])
@pytest.mark.parametrize("op", list(OPS))
def test_torch_16_bit_integers_every_op(name, op):
    dtype = torch_dtype(name)
    r, n = rs()
    rows = int_rows(NP_INTS[name], n)
    out = hvd.allreduce(from_numpy(rows[r], dtype), op=OPS[op], name=f"dt.t.{name}.{op}")
    assert out.dtype == dtype
    np.testing.assert_array_equal(to_numpy(out), int_expected(rows, op))


@pytest.mark.parametrize("op", list(OPS))
def test_torch_bool_is_logical(op):
    r, n = rs()
    rows = bool_rows(n)
    out = hvd.allreduce(torch.from_numpy(rows[r]), op=OPS[op], name=f"dt.t.bool.{op}")
    assert out.dtype == torch.bool
    np.testing.assert_array_equal(out.numpy(), bool_expected(rows, op))


@pytest.mark.parametrize("name", ["int16", "uint16", "bool"])
def test_torch_new_dtypes_gather_broadcast_reducescatter(name):
    dtype = torch_dtype(name)
    r, n = rs()
    npdt = np.bool_ if name == "bool" else NP_INTS[name]
    mine = (np.arange(2 * (r + 1)) % 2 if name == "bool" else np.arange(2 * (r + 1)) + 1000 * r).astype(npdt)
    out = hvd.allgather(from_numpy(mine.reshape(r + 1, 2), dtype), name=f"dt.t.ag.{name}")
    want = np.concatenate([(np.arange(2 * (k + 1)) % 2 if name == "bool" else np.arange(2 * (k + 1)) + 1000 * k)
                           .astype(npdt).reshape(k + 1, 2) for k in range(n)])
    np.testing.assert_array_equal(to_numpy(out), want)
    src = np.array([1, 0, 1], dtype=npdt) if r == n - 1 else np.zeros(3, npdt)
    out = hvd.broadcast(from_numpy(src, dtype), root_rank=n - 1, name=f"dt.t.bc.{name}")
    np.testing.assert_array_equal(to_numpy(out), np.array([1, 0, 1], dtype=npdt))
    rows = [np.full((n, 2), k % 2 if name == "bool" else k + 1, dtype=npdt) for k in range(n)]
    out = hvd.reducescatter(from_numpy(rows[r], dtype), op=hvd.Sum, name=f"dt.t.rs.{name}")
    want = np.add.reduce(np.stack(rows), axis=0)[r : r + 1] if name != "bool" else np.stack(rows).any(0)[r : r + 1]
    np.testing.assert_array_equal(to_numpy(out), want.astype(npdt))


def test_torch_integer_average_truncates_toward_zero():
    r, n = rs()
    # the sums are -1, 1, 2n - 1 and -(n + 1): not multiples of n, negative ones included
    x = torch.tensor([-1 if r == 0 else 0, 1 if r == 0 else 0, 2 - (r == 0), -1 - (r == 0)], dtype=torch.int32)
    sums = np.array([-1, 1, 2 * n - 1, -(n + 1)], dtype=np.float64)
    out = hvd.allreduce(x, op=hvd.Average, name="dt.t.avg")
    np.testing.assert_array_equal(out.numpy(), np.trunc(sums * (1.0 / n)).astype(np.int32))
    assert out[0].item() == 0, "-1/n rounds toward zero, not down"
    out = hvd.allreduce(x.to(torch.int16), op=hvd.Average, name="dt.t.avg16")
    np.testing.assert_array_equal(out.numpy(), np.trunc(sums * (1.0 / n)).astype(np.int16))


def test_torch_integer_scale_factors_are_applied_in_float64_and_truncated():
    r, n = rs()
    x = torch.tensor([3, -3, 5, 1], dtype=torch.int64)
    # prescale before the sum: each rank's 1.5 becomes 1, -1.5 becomes -1, 2.5 becomes 2, 0.5 becomes 0
    out = hvd.allreduce(x, op=hvd.Sum, prescale_factor=0.5, name="dt.t.pre")
    assert out.tolist() == [n, -n, 2 * n, 0]
    # postscale after it: 3n * 0.5 is truncated once
    out = hvd.allreduce(x, op=hvd.Sum, postscale_factor=0.5, name="dt.t.post")
    assert out.tolist() == [int(np.trunc(v * n * 0.5)) for v in (3, -3, 5, 1)]
    # Average with a postscale: one float64 factor, postscale / size
    out = hvd.allreduce(x.to(torch.int16), op=hvd.Average, postscale_factor=3.0, name="dt.t.avgpost")
    assert out.tolist() == [int(np.trunc(v * n * (3.0 / n))) for v in (3, -3, 5, 1)]


def test_bool_refuses_average_and_scale_factors_on_every_rank():
    t = torch.tensor([True, False])
    with pytest.raises(hora.InvalidArgumentError, match="bool tensor cannot be averaged") as info:
        hvd.allreduce(t, name="dt.t.boolavg")
    assert info.value.tensor_name == "allreduce.dt.t.boolavg"
    assert isinstance(info.value, ValueError)
    with pytest.raises(hora.InvalidArgumentError, match="cannot be scaled"):
        hvd.allreduce(t, op=hvd.Sum, prescale_factor=2.0, name="dt.t.boolscale")
    # nothing was sent: the ranks are still in step
    assert hvd.allreduce(t, op=hvd.Sum, name="dt.t.boolafter").tolist() == [True, False]


@needs_tf
@pytest.mark.parametrize("name", ["int16", "uint16", "bool"])
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_tf_new_dtypes_every_op(name, op, mode):
    r, n = rs()
    rows = bool_rows(n) if name == "bool" else int_rows(NP_INTS[name], n)
    want = bool_expected(rows, op) if name == "bool" else int_expected(rows, op)
    dtype = getattr(tf, name)

    def fn(t):
        return htf.allreduce(t, op=OPS[op], name=f"dt.tf.{name}.{op}.{mode}")

    x = tf.constant(rows[r], dtype=dtype)
    out = fn(x) if mode == "eager" else tf.function(fn)(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.numpy(), want)


@needs_tf
def test_tf_integer_average_truncates_and_bool_average_is_refused():
    r, n = rs()
    x = tf.constant([-1 if r == 0 else 0, 2 - (r == 0), -1 - (r == 0)], dtype=tf.int16)
    sums = np.array([-1, 2 * n - 1, -(n + 1)], dtype=np.float64)
    out = htf.allreduce(x, op=htf.Average, name="dt.tf.avg")
    np.testing.assert_array_equal(out.numpy(), np.trunc(sums * (1.0 / n)).astype(np.int16))
    out = htf.allreduce(tf.constant([3, -3], tf.int32), op=htf.Sum, prescale_factor=0.5,
                        name="dt.tf.pre")
    assert out.numpy().tolist() == [n, -n]
    with pytest.raises(hora.InvalidArgumentError, match="averaged"):
        htf.allreduce(tf.constant([True]), name="dt.tf.boolavg")
    assert htf.allreduce(tf.constant([r == 0]), op=htf.Max, name="dt.tf.boolafter").numpy().tolist() == [True]
