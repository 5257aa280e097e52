"""Grouped collectives of hora.torch: each list is one engine group (negotiated and fused as a
unit), results match the single forms, gradients follow Horovod's conventions, process sets
work, and ranks that group differently get an error instead of a hang."""

import pytest
import torch

import hora
import hora.torch as hvd


def rs():
    return hvd.rank(), hvd.size()


def test_grouped_allreduce_of_many_tensors_matches_single_allreduces():
    r, n = rs()
    ts = [torch.full((i + 1,), float(r + i)) for i in range(100)]
    outs = hvd.grouped_allreduce(ts, op=hvd.Sum, name="many")
    for i, o in enumerate(outs):
        assert torch.equal(o, torch.full((i + 1,), float(sum(k + i for k in range(n))))), i
    avg = hvd.grouped_allreduce([torch.full((3,), float(r)), torch.full((2, 2), 2.0 * r, dtype=torch.float64)])
    assert torch.allclose(avg[0], torch.full((3,), (n - 1) / 2))
    assert avg[1].dtype == torch.float64 and torch.allclose(avg[1], torch.full((2, 2), float(n - 1), dtype=torch.float64))


def test_grouped_allreduce_in_place_and_async_and_empty():
    r, n = rs()
    ts = [torch.full((4,), float(r)), torch.full((3, 2), 1.0).t()]  # the second is not contiguous
    h = hvd.grouped_allreduce_async_(ts, op=hvd.Sum, name="inplace")
    out = hvd.synchronize(h)
    assert out[0] is ts[0] and out[1] is ts[1]
    assert torch.equal(ts[0], torch.full((4,), float(sum(range(n)))))
    assert torch.equal(ts[1], torch.full((2, 3), float(n)))
    assert hvd.grouped_allreduce([], name="empty") == []


def test_grouped_allgather_with_rank_dependent_rows():
    r, n = rs()
    ts = [torch.full((r + 1, 2), r, dtype=torch.int32), torch.tensor(float(r)), torch.arange(3) + 10 * r]
    h = hvd.grouped_allgather_async(ts, name="ag")
    a, b, c = hvd.synchronize(h)
    assert torch.equal(a, torch.cat([torch.full((k + 1, 2), k, dtype=torch.int32) for k in range(n)]))
    assert torch.equal(b, torch.arange(n, dtype=torch.float32))
    assert torch.equal(c, torch.cat([torch.arange(3) + 10 * k for k in range(n)]))


def test_grouped_reducescatter_matches_reducescatter():
    r, n = rs()
    ts = [torch.arange(2 * n * 3, dtype=torch.float32).reshape(2 * n, 3) + r, torch.full((n + 1,), float(r))]
    outs = hvd.synchronize(hvd.grouped_reducescatter_async(ts, op=hvd.Sum, name="rs"))
    singles = [hvd.reducescatter(t, op=hvd.Sum, name=f"rs.single.{i}") for i, t in enumerate(ts)]
    for o, s in zip(outs, singles):
        assert torch.equal(o, s)
    scaled = hvd.grouped_reducescatter([ts[0]], op=hvd.Average, prescale_factor=2.0, postscale_factor=0.5)
    assert torch.allclose(scaled[0], singles[0] / n)


def test_grouped_allreduce_gradient_is_the_allreduced_gradient():
    r, n = rs()
    xs = [torch.full((3,), float(r), requires_grad=True), torch.full((2,), 1.0, requires_grad=True)]
    outs = hvd.grouped_allreduce(xs, op=hvd.Sum, name="grad.ar")
    (outs[0] * (r + 1)).sum().backward(retain_graph=True)
    # d/dx of sum_k(out * (k + 1)) summed over ranks, as the single allreduce gives.
    assert torch.equal(xs[0].grad, torch.full((3,), float(sum(k + 1 for k in range(n)))))
    assert torch.equal(xs[1].grad, torch.zeros(2))
    y = torch.full((3,), float(r), requires_grad=True)
    (hvd.allreduce(y, op=hvd.Sum, name="grad.ar.single") * (r + 1)).sum().backward()
    assert torch.equal(y.grad, xs[0].grad)


def test_grouped_allgather_gradient_averages_then_slices():
    r, n = rs()
    xs = [torch.ones(r + 1, 2, requires_grad=True), torch.ones(2, requires_grad=True)]
    a, b = hvd.grouped_allgather(xs, name="grad.ag")
    rows = sum(k + 1 for k in range(n))
    assert a.shape == (rows, 2) and b.shape == (2 * n,)
    wa = torch.arange(rows, dtype=torch.float32).reshape(rows, 1) * (r + 1)
    wb = torch.arange(2 * n, dtype=torch.float32)
    ((a * wa).sum() + (b * wb).sum()).backward()
    mean = sum(k + 1 for k in range(n)) / n
    start = sum(k + 1 for k in range(r))
    expect_a = (torch.arange(start, start + r + 1, dtype=torch.float32) * mean).reshape(r + 1, 1).expand(r + 1, 2)
    assert torch.allclose(xs[0].grad, expect_a)
    assert torch.allclose(xs[1].grad, torch.arange(2 * r, 2 * r + 2, dtype=torch.float32))
    # The single form gives the same gradient.
    y = torch.ones(r + 1, 2, requires_grad=True)
    (hvd.allgather(y, name="grad.ag.single") * wa).sum().backward()
    assert torch.allclose(y.grad, xs[0].grad)


@pytest.mark.parametrize("op", ["sum", "average"])
def test_grouped_reducescatter_gradient_follows_horovod(op):
    r, n = rs()
    hop = hvd.Sum if op == "sum" else hvd.Average
    xs = [torch.ones(2 * n, 3, requires_grad=True)]
    (out,) = hvd.grouped_reducescatter(xs, op=hop, name=f"grad.rs.{op}", prescale_factor=3.0)
    (out * (r + 1)).sum().backward()
    y = torch.ones(2 * n, 3, requires_grad=True)
    (hvd.reducescatter(y, op=hop, name=f"grad.rs.single.{op}", prescale_factor=3.0) * (r + 1)).sum().backward()
    assert torch.allclose(xs[0].grad, y.grad)
    scale = 3.0 * (n if op == "sum" else 1)
    expect = torch.cat([torch.full((2, 3), float(k + 1)) for k in range(n)]) * scale
    assert torch.allclose(xs[0].grad, expect)


@pytest.fixture
def halves():
    r, n = rs()
    even = hvd.add_process_set([k for k in range(n) if k % 2 == 0])
    odd = hvd.add_process_set([k for k in range(n) if k % 2 == 1])
    mine = even if r % 2 == 0 else odd
    yield mine
    hvd.remove_process_set(odd)
    hvd.remove_process_set(even)


def test_grouped_forms_in_a_process_set(halves):
    mine = halves
    r, members = hvd.rank(), mine.ranks
    outs = hvd.grouped_allreduce([torch.full((2,), float(r)), torch.ones(1)], op=hvd.Sum, name="ps.gar",
                                 process_set=mine)
    assert torch.equal(outs[0], torch.full((2,), float(sum(members))))
    assert torch.equal(outs[1], torch.full((1,), float(len(members))))
    (g,) = hvd.grouped_allgather([torch.full((1,), r)], name="ps.gag", process_set=mine)
    assert g.tolist() == members
    (s,) = hvd.grouped_reducescatter([torch.ones(2 * len(members))], op=hvd.Sum, name="ps.grs", process_set=mine)
    assert torch.equal(s, torch.full((2,), float(len(members))))


def test_ranks_grouping_different_tensors_fail_on_every_rank():
    r, n = rs()
    count = 3 if r == 0 else 2
    with pytest.raises(hora.HoraError, match="grouped"):
        hvd.grouped_allreduce([torch.ones(2) for _ in range(count)], name="mismatch")
    # The engine is still usable afterwards.
    assert torch.equal(hvd.grouped_allreduce([torch.ones(1)], op=hvd.Sum, name="after")[0], torch.full((1,), n))


def test_a_repeated_name_fails_the_group_on_this_rank_alone():
    from hora import _core
    from hora.common.vocabulary import ALLREDUCE, DTYPES

    t = torch.ones(2)
    members = [("dup", DTYPES["f32"], [2], t, t.data_ptr(), 8)] * 2
    handles = _core.enqueue_group(kind=ALLREDUCE, members=members)
    assert len(handles) == 2
    for h in handles:
        with pytest.raises(hora.HoraError, match="twice in one group"):
            h.wait()
