"""Every collective of hora.torch, every dtype, in-place and out-of-place, sync and async."""

import pytest
import torch
from conftest import DTYPES

import hora
import hora.torch as hvd


def rs():
    return hvd.rank(), hvd.size()


def test_topology():
    r, n = rs()
    assert 0 <= r < n and n >= 2
    assert hvd.is_initialized()
    assert hvd.local_size() == n and hvd.local_rank() == r
    assert hvd.cross_size() == 1 and hvd.cross_rank() == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_allreduce_sum_every_dtype(dtype):
    r, n = rs()
    x = (torch.arange(6) % 3 + r).to(dtype).reshape(2, 3)
    out = hvd.allreduce(x, op=hvd.Sum, name=f"sum.{dtype}")
    expected = sum((torch.arange(6) % 3 + k) for k in range(n)).to(dtype).reshape(2, 3)
    assert out.dtype == dtype and out.shape == (2, 3)
    assert torch.equal(out, expected)
    assert torch.equal(x, (torch.arange(6) % 3 + r).to(dtype).reshape(2, 3)), "out-of-place changed the input"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("op", ["average", "min", "max", "product"])
def test_allreduce_ops(dtype, op):
    r, n = rs()
    x = torch.tensor([1.0 + r, 2.0 - r, 0.5 * (r + 1)], dtype=torch.float64)
    all_x = torch.stack([torch.tensor([1.0 + k, 2.0 - k, 0.5 * (k + 1)], dtype=torch.float64) for k in range(n)])
    expected = {"average": all_x.mean(0), "min": all_x.min(0).values, "max": all_x.max(0).values,
                "product": all_x.prod(0)}[op]
    hop = {"average": hvd.Average, "min": hvd.Min, "max": hvd.Max, "product": hvd.Product}[op]
    out = hvd.allreduce(x.to(dtype), op=hop)
    tol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6
    assert torch.allclose(out.double(), expected, rtol=tol, atol=tol)


def test_allreduce_default_is_average_and_scaling():
    r, n = rs()
    x = torch.full((5,), float(r))
    assert torch.allclose(hvd.allreduce(x), torch.full((5,), (n - 1) / 2))
    out = hvd.allreduce(x, op=hvd.Sum, prescale_factor=2.0, postscale_factor=0.5)
    assert torch.allclose(out, torch.full((5,), float(sum(range(n)))))
    out = hvd.allreduce(torch.ones(3), op=hvd.Sum, postscale_factor=3.0)
    assert torch.allclose(out, torch.full((3,), 3.0 * n))


def test_allreduce_in_place_and_noncontiguous():
    r, n = rs()
    x = torch.full((3, 4), float(r + 1))
    ret = hvd.allreduce_(x, op=hvd.Sum)
    assert ret is x and torch.allclose(x, torch.full((3, 4), n * (n + 1) / 2))
    base = torch.full((4, 3), float(r + 1))
    t = base.t()  # non-contiguous view
    assert not t.is_contiguous()
    hvd.allreduce_(t, op=hvd.Sum)
    assert torch.allclose(base, torch.full((4, 3), n * (n + 1) / 2)), "view result not copied back"
    out = hvd.allreduce(torch.full((4, 3), 1.0).t(), op=hvd.Sum)
    assert out.shape == (3, 4) and torch.allclose(out, torch.full((3, 4), float(n)))


def test_async_poll_synchronize():
    r, n = rs()
    tensors = [torch.full((100,), float(i + r)) for i in range(10)]
    handles = [hvd.allreduce_async(t, op=hvd.Sum, name=f"async.{i}") for i, t in enumerate(tensors)]
    inplace = [hvd.allreduce_async_(t, op=hvd.Max, name=f"async_.{i}") for i, t in enumerate(tensors)]
    outs = [hvd.synchronize(h) for h in handles]
    for h in inplace:
        hvd.synchronize(h)
        assert not isinstance(hvd.poll, type(None))
    for i, out in enumerate(outs):
        assert torch.allclose(out, torch.full((100,), float(n * i + n * (n - 1) / 2)))
        assert torch.allclose(tensors[i], torch.full((100,), float(i + n - 1)))
    h = hvd.allreduce_async(torch.ones(1))
    while not hvd.poll(h):
        pass
    assert hvd.synchronize(h).item() == 1.0
    with pytest.raises(ValueError):
        hvd.synchronize(h)


def test_grouped_allreduce():
    r, n = rs()
    ts = [torch.full((i + 1,), float(r)) for i in range(5)] + [torch.full((2, 2), 1, dtype=torch.int32)]
    outs = hvd.grouped_allreduce(ts, op=hvd.Sum)
    for i in range(5):
        assert torch.allclose(outs[i], torch.full((i + 1,), float(sum(range(n)))))
        assert torch.allclose(ts[i], torch.full((i + 1,), float(r)))
    assert torch.equal(outs[5], torch.full((2, 2), n, dtype=torch.int32))
    ret = hvd.grouped_allreduce_(ts[:3])
    assert ret[0] is ts[0] and torch.allclose(ts[2], torch.full((3,), (n - 1) / 2))
    h = hvd.grouped_allreduce_async([torch.ones(2), torch.ones(3)], op=hvd.Sum, name="g")
    a, b = hvd.synchronize(h)
    assert torch.allclose(b, torch.full((3,), float(n)))
    h = hvd.grouped_allreduce_async_([torch.ones(2)], op=hvd.Sum)
    assert torch.allclose(hvd.synchronize(h)[0], torch.full((2,), float(n)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_allgather_ragged_every_dtype(dtype):
    r, n = rs()
    x = torch.full((r + 1, 3), r + 1).to(dtype)
    out = hvd.allgather(x, name=f"ag.{dtype}")
    expected = torch.cat([torch.full((k + 1, 3), k + 1).to(dtype) for k in range(n)])
    assert out.dtype == dtype and torch.equal(out, expected)
    h = hvd.allgather_async(torch.tensor([r]))
    assert hvd.synchronize(h).tolist() == list(range(n))


def test_allgather_empty_on_one_rank():
    r, n = rs()
    x = torch.ones((0 if r == 0 else 2, 2))
    out = hvd.allgather(x)
    assert out.shape == (2 * (n - 1), 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_broadcast_from_each_root(dtype):
    r, n = rs()
    for root in range(n):
        x = torch.full((3, 2), r + 10).to(dtype)
        out = hvd.broadcast(x, root, name=f"bc.{dtype}.{root}")
        assert torch.equal(out, torch.full((3, 2), root + 10).to(dtype))
        assert torch.equal(x, torch.full((3, 2), r + 10).to(dtype))
        ret = hvd.broadcast_(x, root_rank=root)
        assert ret is x and torch.equal(x, out)
        h = hvd.broadcast_async(torch.tensor([float(r)]), root)
        assert hvd.synchronize(h).item() == float(root)
        y = torch.tensor([float(r)])
        hvd.synchronize(hvd.broadcast_async_(y, root))
        assert y.item() == float(root)


@pytest.mark.parametrize("dtype", DTYPES)
def test_alltoall_even_and_uneven(dtype):
    r, n = rs()
    x = (torch.arange(n) + 10 * r).to(dtype)
    out = hvd.alltoall(x)
    assert torch.equal(out, torch.tensor([10 * k + r for k in range(n)]).to(dtype))
    # uneven: rank r sends (d + 1) rows to rank d
    splits = [d + 1 for d in range(n)]
    x = torch.cat([torch.full((d + 1, 2), 10 * r + d) for d in range(n)]).to(dtype)
    out, received = hvd.alltoall(x, splits=splits)
    assert received.tolist() == [r + 1] * n
    expected = torch.cat([torch.full((r + 1, 2), 10 * k + r) for k in range(n)]).to(dtype)
    assert torch.equal(out, expected)
    out2, rec2 = hvd.synchronize(hvd.alltoall_async(x, splits=torch.tensor(splits)))
    assert torch.equal(out2, expected) and torch.equal(rec2, received)


def test_reducescatter():
    r, n = rs()
    rows = 2 * n + 1
    x = torch.arange(rows * 2, dtype=torch.float32).reshape(rows, 2) + r
    out = hvd.reducescatter(x, op=hvd.Sum)
    full = sum(torch.arange(rows * 2, dtype=torch.float32).reshape(rows, 2) + k for k in range(n))
    counts = [rows // n + (1 if k < rows % n else 0) for k in range(n)]
    start = sum(counts[:r])
    assert torch.allclose(out, full[start : start + counts[r]])
    avg = hvd.synchronize(hvd.reducescatter_async(x))
    assert torch.allclose(avg, full[start : start + counts[r]] / n)


def test_barrier_and_join_uneven_batches():
    r, n = rs()
    hvd.barrier()
    steps = 3 + r  # the last rank has the most batches
    for i in range(steps):
        out = hvd.allreduce(torch.ones(4), op=hvd.Sum, name=f"uneven.{i}")
        active = sum(1 for k in range(n) if i < 3 + k)
        assert torch.allclose(out, torch.full((4,), float(active))), (i, out)
    last = hvd.join()
    assert last == n - 1
    hvd.barrier()


def test_mismatched_shapes_raise_on_all_ranks():
    r, n = rs()
    x = torch.ones(3 + r)
    with pytest.raises(hora.MismatchError) as info:
        hvd.allreduce(x, name="mismatch")
    err = info.value
    assert isinstance(err, hora.HoraError) and isinstance(err, hvd.HorovodInternalError)
    assert err.rank == r and err.tensor_name == "allreduce.mismatch"
    assert "shape" in str(err)
    # the job goes on afterwards
    assert hvd.allreduce(torch.ones(2), op=hvd.Sum).sum().item() == 2 * n


def test_bad_arguments():
    with pytest.raises(TypeError, match="dtype"):
        hvd.allreduce(torch.ones(2, dtype=torch.complex64))
    with pytest.raises(TypeError):
        hvd.allreduce([1, 2])
    with pytest.raises(hora.InvalidArgumentError, match="root"):
        hvd.broadcast(torch.ones(2), root_rank=hvd.size() + 3)
    with pytest.raises(hora.InvalidArgumentError, match="splits"):
        hvd.alltoall(torch.ones(4), splits=[1] * (hvd.size() + 1))


def test_compression_fp16():
    r, n = rs()
    x = torch.full((8,), 0.25 * (r + 1), dtype=torch.float32)
    out = hvd.allreduce(x, op=hvd.Sum, compression=hvd.Compression.fp16)
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.full((8,), 0.25 * n * (n + 1) / 2))
    ints = torch.ones(2, dtype=torch.int32)
    assert hvd.allreduce(ints, op=hvd.Sum, compression=hvd.Compression.fp16).dtype == torch.int32


def test_autograd_through_collectives():
    r, n = rs()
    x = torch.full((2,), float(r + 1), requires_grad=True)
    hvd.allreduce(x, op=hvd.Sum).sum().backward()
    assert torch.allclose(x.grad, torch.full((2,), float(n)))
    y = torch.full((r + 1,), 1.0, requires_grad=True)
    (hvd.allgather(y) * 2).sum().backward()
    # Horovod's convention: the gradients of the gathered tensor are averaged over ranks.
    assert torch.allclose(y.grad, torch.full((r + 1,), 2.0))
    z = torch.ones(3, requires_grad=True)
    hvd.broadcast(z, 0).sum().backward()
    assert torch.allclose(z.grad, torch.full((3,), 1.0 if r == 0 else 0.0))


def test_objects_and_parameters():
    r, n = rs()
    obj = hvd.broadcast_object({"rank": r, "data": list(range(r + 3))}, root_rank=n - 1)
    assert obj == {"rank": n - 1, "data": list(range(n + 2))}
    assert hvd.allgather_object(("r", r)) == [("r", k) for k in range(n)]
    # The usual pattern passes None off the root (and objects whose type differs by rank).
    assert hvd.broadcast_object({"a": 1} if r == 0 else None, root_rank=0) == {"a": 1}
    assert hvd.allgather_object(r if r % 2 else str(r)) == [k if k % 2 else str(k) for k in range(n)]
    torch.manual_seed(r)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    flat = torch.cat([p.detach().flatten().float() for p in model.state_dict().values()])
    gathered = hvd.allgather(flat.unsqueeze(0))
    assert all(torch.equal(gathered[0], gathered[k]) for k in range(n))
    hvd.broadcast_parameters(list(model.named_parameters()), root_rank=n - 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1 * (r + 1))
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    hvd.broadcast_optimizer_state(opt, root_rank=0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    states = hvd.allgather_object([v["exp_avg"].sum().item() for v in opt.state.values()])
    assert all(s == states[0] for s in states)
