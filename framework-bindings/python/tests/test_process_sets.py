"""Process sets from hora.torch (Horovod's semantics): every collective on the sets of even and
odd ranks, gradients through a set, and misuse refused on every rank. Needs
HOROVOD_DYNAMIC_PROCESS_SETS=1 (make test sets it)."""

import pytest
import torch

import hora.torch as hvd


@pytest.fixture
def halves():
    r, n = hvd.rank(), hvd.size()
    even = hvd.add_process_set([k for k in range(n) if k % 2 == 0])
    odd = hvd.add_process_set(hvd.ProcessSet([k for k in range(n) if k % 2 == 1]))
    mine, other = (even, odd) if r % 2 == 0 else (odd, even)
    yield mine, other
    hvd.remove_process_set(odd)
    hvd.remove_process_set(even)


def test_a_set_knows_its_members(halves):
    mine, other = halves
    r = hvd.rank()
    assert mine.included() and not other.included()
    assert mine.rank() == mine.ranks.index(r) and other.rank() is None
    assert mine.size() == len(mine.ranks)
    assert hvd.global_process_set.process_set_id == 0
    assert hvd.global_process_set.ranks == list(range(hvd.size()))
    assert mine.process_set_id != other.process_set_id


def test_every_collective_runs_among_the_members_only(halves):
    mine, _ = halves
    r, members = hvd.rank(), mine.ranks
    total = float(sum(members))
    out = hvd.allreduce(torch.full((5,), float(r)), op=hvd.Sum, name="ps.ar", process_set=mine)
    assert torch.equal(out, torch.full((5,), total))
    avg = hvd.allreduce(torch.full((2,), float(r)), name="ps.avg", process_set=mine)
    assert torch.allclose(avg, torch.full((2,), total / len(members)))
    t = torch.full((3,), float(r))
    hvd.allreduce_(t, op=hvd.Sum, name="ps.ar_", process_set=mine)
    assert torch.equal(t, torch.full((3,), total))
    outs = hvd.grouped_allreduce([torch.ones(2) * r, torch.ones(3)], op=hvd.Sum, name="ps.g", process_set=mine)
    assert torch.equal(outs[0], torch.full((2,), total)) and torch.equal(outs[1], torch.full((3,), len(members)))
    gathered = hvd.allgather(torch.full((1, 2), r, dtype=torch.int64), name="ps.ag", process_set=mine)
    assert gathered[:, 0].tolist() == members
    for root in members:
        b = hvd.broadcast(torch.full((4,), r, dtype=torch.int32), root_rank=root, name=f"ps.bc.{root}",
                          process_set=mine)
        assert torch.equal(b, torch.full((4,), root, dtype=torch.int32))
    send = torch.tensor([r * 100 + d for d in range(len(members))])
    got = hvd.alltoall(send, name="ps.a2a", process_set=mine)
    assert got.tolist() == [s * 100 + mine.rank() for s in members]
    share = hvd.reducescatter(torch.ones(2 * len(members)), op=hvd.Sum, name="ps.rs", process_set=mine)
    assert torch.equal(share, torch.full((2,), float(len(members))))
    hvd.barrier(process_set=mine)


def test_gradients_flow_through_a_sets_collectives(halves):
    mine, _ = halves
    x = torch.ones(3, requires_grad=True)
    hvd.allreduce(x, op=hvd.Sum, name="ps.grad", process_set=mine).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), float(len(mine.ranks))))
    y = torch.ones(2, 2, requires_grad=True)
    hvd.allgather(y, name="ps.ag.grad", process_set=mine).sum().backward()
    # Horovod's convention: the gathered gradients are averaged over the set's ranks.
    assert torch.equal(y.grad, torch.ones(2, 2))


def test_misuse_is_refused_on_the_rank_that_made_it(halves):
    mine, other = halves
    with pytest.raises(hvd.InvalidArgumentError, match="is not in process set"):
        hvd.allreduce(torch.ones(1), name="ps.not_mine", process_set=other)
    with pytest.raises(ValueError, match="a root must be a member"):
        hvd.broadcast(torch.ones(1), root_rank=other.ranks[0], name="ps.bad_root", process_set=mine)
    with pytest.raises(hvd.InvalidArgumentError, match="not registered"):
        hvd.allreduce(torch.ones(1), name="ps.unregistered", process_set=hvd.ProcessSet([0]))
    with pytest.raises(hvd.InvalidArgumentError, match="must be a hora ProcessSet"):
        hvd.allreduce(torch.ones(1), name="ps.int", process_set=1)


def test_ranks_that_disagree_all_get_the_same_error():
    r, n = hvd.rank(), hvd.size()
    ranks = list(range(n)) if r == 0 else [0]
    with pytest.raises(hvd.InvalidArgumentError, match="ranks disagree") as e:
        hvd.add_process_set(ranks)
    assert "rank 0: " in str(e.value)
    # The job goes on: a set everyone agrees on works afterwards.
    last = hvd.add_process_set([n - 1])
    if r == n - 1:
        assert torch.equal(hvd.allreduce(torch.ones(1), op=hvd.Sum, name="ps.last", process_set=last), torch.ones(1))
    hvd.remove_process_set(last)
    assert last.process_set_id is None


def test_an_optimizer_on_a_set_averages_gradients_among_its_members(halves):
    mine, _ = halves
    r = hvd.rank()
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=1.0),
                                   named_parameters=model.named_parameters(), process_set=mine)
    (model(torch.ones(1, 1)) * r).sum().backward()
    opt.step()
    want = -sum(mine.ranks) / len(mine.ranks)
    assert model.weight.item() == pytest.approx(want)


def test_object_helpers_take_a_set(halves):
    mine, _ = halves
    r = hvd.rank()
    root = mine.ranks[-1]
    got = hvd.broadcast_object({"from": r} if r == root else None, root_rank=root, process_set=mine)
    assert got == {"from": root}
    assert hvd.allgather_object(r * 10, process_set=mine) == [k * 10 for k in mine.ranks]
    params = {"w": torch.full((2,), float(r))}
    hvd.broadcast_parameters(params, root_rank=mine.ranks[0], process_set=mine)
    assert torch.equal(params["w"], torch.full((2,), float(mine.ranks[0])))
