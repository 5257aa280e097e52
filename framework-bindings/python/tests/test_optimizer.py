"""DistributedOptimizer and SyncBatchNorm: the training-facing part of hora.torch."""

import pytest
import torch

import hora.torch as hvd


def make_model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def full_batch(step, n, per_rank=4):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(n * per_rank, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n * per_rank,), generator=g)
    return x, y


def all_equal(model):
    flat = torch.cat([p.detach().flatten() for p in model.parameters()]).unsqueeze(0)
    gathered = hvd.allgather(flat)
    return all(torch.equal(gathered[0], gathered[k]) for k in range(hvd.size()))


def train(model, opt, steps, n, r, per_rank=4, passes=1):
    for step in range(steps):
        x, y = full_batch(step, n, per_rank * passes)
        mine = slice(r * per_rank * passes, (r + 1) * per_rank * passes)
        xs, ys = x[mine], y[mine]
        opt.zero_grad()
        for k in range(passes):
            part = slice(k * per_rank, (k + 1) * per_rank)
            loss = torch.nn.functional.cross_entropy(model(xs[part]), ys[part]) / passes
            loss.backward()
        opt.step()


@pytest.mark.parametrize("kind", ["sgd", "adam", "groups", "predivide"])
def test_matches_single_process_full_batch(kind):
    r, n = hvd.rank(), hvd.size()
    model = make_model(seed=r).double()  # different init per rank: broadcast must fix it
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    reference = make_model(seed=0).double()
    kw = {}
    if kind == "groups":
        kw["groups"] = 2
    if kind == "predivide":
        kw["gradient_predivide_factor"] = float(n)
    base = (torch.optim.Adam if kind == "adam" else torch.optim.SGD)
    lr = 0.01 if kind == "adam" else 0.1
    opt = hvd.DistributedOptimizer(base(model.parameters(), lr=lr), named_parameters=model.named_parameters(),
                                   **kw)
    assert isinstance(opt, base)
    ref_opt = base(reference.parameters(), lr=lr)
    train(model, opt, 5, n, r)
    for step in range(5):
        x, y = full_batch(step, n)
        ref_opt.zero_grad()
        torch.nn.functional.cross_entropy(reference(x), y).backward()
        ref_opt.step()
    assert all_equal(model)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-9, atol=1e-10)


def test_backward_passes_per_step_and_fp16():
    r, n = hvd.rank(), hvd.size()
    model = make_model(seed=r).double()
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    reference = make_model(seed=0).double()
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                   named_parameters=model.named_parameters(), backward_passes_per_step=2,
                                   compression=hvd.Compression.fp16)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    train(model, opt, 3, n, r, per_rank=2, passes=2)
    for step in range(3):
        x, y = full_batch(step, n, 4)
        ref_opt.zero_grad()
        # per rank the loss is the mean over its 2x2 samples; averaged over ranks = full mean
        torch.nn.functional.cross_entropy(reference(x), y).backward()
        ref_opt.step()
    assert all_equal(model)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-2, atol=1e-3)  # fp16 on the wire


def test_too_many_backward_passes_and_unused_parameters():
    r, n = hvd.rank(), hvd.size()
    model = make_model(seed=0).double()
    extra = torch.nn.Linear(2, 2).double()  # never used in forward: its grads are reduced as zeros
    params = list(model.named_parameters()) + [("extra." + k, v) for k, v in extra.named_parameters()]
    opt = hvd.DistributedOptimizer(torch.optim.SGD([p for _, p in params], lr=0.1), named_parameters=params)
    x, y = full_batch(0, n)
    torch.nn.functional.cross_entropy(model(x[:4]), y[:4]).backward()
    with pytest.raises(AssertionError, match="backward_passes_per_step"):
        torch.nn.functional.cross_entropy(model(x[:4]), y[:4]).backward()
    opt.synchronize()
    with opt.skip_synchronize():
        opt.step()
    assert torch.equal(extra.weight.grad, torch.zeros(2, 2, dtype=torch.float64))
    opt.zero_grad()
    # The refused second pass still accumulated into .grad while the first pass's allreduce was
    # reading it (as in Horovod, where the hook also runs after accumulation), so that step's
    # parameters may differ by rank; resynchronise them, then check the optimizer recovered.
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    torch.nn.functional.cross_entropy(model(x[:4]), y[:4]).backward()
    opt.step()
    assert all_equal(model)


def test_named_parameters_checked():
    model = make_model(0)
    with pytest.raises(ValueError, match="unique"):
        hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                 named_parameters=[("a", p) for p in model.parameters()])


def test_sync_batch_norm_matches_full_batch():
    r, n = hvd.rank(), hvd.size()
    torch.manual_seed(7)
    full = torch.randn(n * 3, 4, 5, dtype=torch.float64)
    mine = full[r * 3 : (r + 1) * 3].clone().requires_grad_(True)
    sbn = hvd.SyncBatchNorm(4).double()
    bn = torch.nn.BatchNorm1d(4).double()
    out = sbn(mine)
    ref_in = full.clone().requires_grad_(True)
    ref = bn(ref_in)
    assert torch.allclose(out, ref[r * 3 : (r + 1) * 3], atol=1e-8)
    assert torch.allclose(sbn.running_mean, bn.running_mean, atol=1e-8)
    assert torch.allclose(sbn.running_var, bn.running_var, atol=1e-8)
    w = torch.arange(full.numel(), dtype=torch.float64).reshape(full.shape)
    (out * w[r * 3 : (r + 1) * 3]).sum().backward()
    (ref * w).sum().backward()
    assert torch.allclose(mine.grad, ref_in.grad[r * 3 : (r + 1) * 3], atol=1e-6)
    sbn.eval()
    assert torch.allclose(sbn(mine.detach()), bn.eval()(mine.detach()), atol=1e-8)


@pytest.mark.parametrize("sparse_as_dense", [False, True])
def test_sparse_gradients(sparse_as_dense):
    r, n = hvd.rank(), hvd.size()
    torch.manual_seed(0)
    emb = torch.nn.Embedding(6, 2, sparse=True).double()
    opt = hvd.DistributedOptimizer(torch.optim.SGD(emb.parameters(), lr=1.0),
                                   named_parameters=emb.named_parameters(), sparse_as_dense=sparse_as_dense)
    before = emb.weight.detach().clone()
    emb(torch.tensor([r, r + 1])).sum().backward()
    opt.step()
    expected = before.clone()
    for k in range(n):
        expected[k] -= 1.0 / n
        expected[k + 1] -= 1.0 / n
    assert torch.allclose(emb.weight.detach(), expected)
    assert emb.weight.grad.is_sparse != sparse_as_dense


def test_op_sum_and_step_without_hooks_firing():
    r, n = hvd.rank(), hvd.size()
    w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = hvd.DistributedOptimizer(torch.optim.SGD([w], lr=1.0), named_parameters=[("w", w)], op=hvd.Sum)
    (w * (r + 1)).sum().backward()
    opt.step()
    assert torch.allclose(w.detach(), torch.full((3,), -float(n * (n + 1) / 2), dtype=torch.float64))
