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
    # As in Horovod the wrapped optimizer sees a sparse gradient either way: sparse_as_dense
    # only changes what travels (a dense allreduce instead of the allgather of the rows).
    assert emb.weight.grad.is_sparse


def test_op_sum_and_step_without_hooks_firing():
    r, n = hvd.rank(), hvd.size()
    w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = hvd.DistributedOptimizer(torch.optim.SGD([w], lr=1.0), named_parameters=[("w", w)], op=hvd.Sum)
    (w * (r + 1)).sum().backward()
    opt.step()
    assert torch.allclose(w.detach(), torch.full((3,), -float(n * (n + 1) / 2), dtype=torch.float64))


@pytest.mark.parametrize("op", [hvd.Sum, hvd.Average])
def test_sparse_allreduce_async_gathers_every_ranks_rows(op):
    r, n = hvd.rank(), hvd.size()
    # Rank r touches rows r and r + 1 (row r twice, uncoalesced), with values that name the rank.
    idx = torch.tensor([[r, r + 1, r]])
    vals = torch.tensor([[1.0, r], [2.0, r], [3.0, r]], dtype=torch.float64)
    t = torch.sparse_coo_tensor(idx, vals, (n + 1, 2), check_invariants=True)
    out = hvd.synchronize(hvd.sparse_allreduce_async(t, name=f"sparse.{op.name}", op=op))
    assert out.is_sparse and out.shape == (n + 1, 2) and out.dtype == torch.float64
    expected = torch.zeros(n + 1, 2, dtype=torch.float64)
    for k in range(n):
        expected[k] += torch.tensor([4.0, 2 * k], dtype=torch.float64)
        expected[k + 1] += torch.tensor([2.0, k], dtype=torch.float64)
    if op == hvd.Average:
        expected /= n
    assert torch.allclose(out.to_dense(), expected)
    # Ranks with no rows take part too, and an all-empty result is an empty sparse tensor.
    empty = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.int64), torch.zeros(0, 2), (3, 2),
                                    check_invariants=True)
    mixed = empty if r else torch.sparse_coo_tensor(torch.tensor([[2]]), torch.ones(1, 2), (3, 2),
                                                    check_invariants=True)
    out = hvd.synchronize(hvd.sparse_allreduce_async(mixed, name="sparse.mixed", op=hvd.Sum))
    assert torch.equal(out.to_dense(), torch.tensor([[0.0, 0], [0, 0], [1, 1]]))
    out = hvd.synchronize(hvd.sparse_allreduce_async(empty, name="sparse.empty", op=hvd.Sum))
    assert out.is_sparse and out._nnz() == 0 and out.shape == (3, 2)


def test_sparse_allreduce_async_refuses_what_it_cannot_do():
    dense = torch.ones(3)
    with pytest.raises(ValueError, match="sparse COO"):
        hvd.sparse_allreduce_async(dense, name="sparse.dense", op=hvd.Sum)
    t = torch.ones(3).to_sparse()
    with pytest.raises(ValueError, match="Sum or Average"):
        hvd.sparse_allreduce_async(t, name="sparse.max", op=hvd.Max)


@pytest.mark.parametrize("sparse_as_dense", [False, True])
def test_sparse_adam_trains_like_one_process_on_the_full_batch(sparse_as_dense):
    r, n = hvd.rank(), hvd.size()
    torch.manual_seed(3)
    emb = torch.nn.Embedding(n + 4, 3, sparse=True).double()
    ref = torch.nn.Embedding(n + 4, 3, sparse=True).double()
    ref.load_state_dict(emb.state_dict())
    opt = hvd.DistributedOptimizer(torch.optim.SparseAdam(emb.parameters(), lr=0.1),
                                   named_parameters=emb.named_parameters(), sparse_as_dense=sparse_as_dense)
    ref_opt = torch.optim.SparseAdam(ref.parameters(), lr=0.1)
    for step in range(3):
        rows = lambda k: torch.tensor([(k + step) % (n + 4), (k + step + 2) % (n + 4)])  # noqa: E731
        opt.zero_grad()
        (emb(rows(r)) ** 2).sum().backward()
        opt.step()
        ref_opt.zero_grad()
        (sum((ref(rows(k)) ** 2).sum() for k in range(n)) / n).backward()
        ref_opt.step()
        assert emb.weight.grad.is_sparse
    assert torch.allclose(emb.weight.detach(), ref.weight.detach(), atol=1e-10)


def test_a_sparse_parameter_without_a_gradient_still_joins_the_others():
    r, n = hvd.rank(), hvd.size()
    emb = torch.nn.Embedding(4, 2, sparse=True).double()
    torch.nn.init.zeros_(emb.weight)
    lin = torch.nn.Linear(2, 1).double()
    params = list(emb.named_parameters(prefix="emb")) + list(lin.named_parameters(prefix="lin"))
    opt = hvd.DistributedOptimizer(torch.optim.SGD([p for _, p in params], lr=1.0), named_parameters=params,
                                   groups=1)
    for step in range(2):
        opt.zero_grad()
        # Step 0: everybody uses the embedding (hora learns it is sparse). Step 1: only rank 0.
        if step == 0 or r == 0:
            lin(emb(torch.tensor([step]))).sum().backward()
        else:
            lin(torch.ones(1, 2, dtype=torch.float64)).sum().backward()
        opt.step()
    assert all_equal(emb) and all_equal(lin)


def test_set_backward_passes_per_step_and_load_state_dict_restart_the_counts():
    r, n = hvd.rank(), hvd.size()
    model = make_model(1).double()
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                                   named_parameters=model.named_parameters())
    opt.set_backward_passes_per_step(2)
    assert opt.backward_passes_per_step == 2
    x, y = full_batch(0, n)
    mine = slice(r * 4, (r + 1) * 4)
    torch.nn.functional.cross_entropy(model(x[mine]), y[mine]).backward()
    # Halfway through an accumulation, a checkpoint is loaded: the half-counted pass is forgotten.
    opt.zero_grad()
    opt.load_state_dict(opt.state_dict())
    for _ in range(2):
        torch.nn.functional.cross_entropy(model(x[mine]), y[mine]).backward()
    opt.step()
    assert all_equal(model)
    with pytest.raises(ValueError, match="at least 1"):
        opt.set_backward_passes_per_step(0)


OPTIMIZERS = {
    "SGD": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
    "Adam": lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.1),
    "AdamW": lambda ps: torch.optim.AdamW(ps, lr=0.01),
    "Adamax": lambda ps: torch.optim.Adamax(ps, lr=0.01),
    "NAdam": lambda ps: torch.optim.NAdam(ps, lr=0.01),
    "RAdam": lambda ps: torch.optim.RAdam(ps, lr=0.01),
    "Adagrad": lambda ps: torch.optim.Adagrad(ps, lr=0.01),
    "Adadelta": lambda ps: torch.optim.Adadelta(ps),
    "RMSprop": lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.5),
    "Rprop": lambda ps: torch.optim.Rprop(ps, lr=0.01),
    "ASGD": lambda ps: torch.optim.ASGD(ps, lr=0.01),
    "LBFGS": lambda ps: torch.optim.LBFGS(ps, lr=0.1, history_size=3),
}


def _state_fingerprint(opt):
    """Every number in the optimizer's state dict, flattened in order."""
    out = []

    def walk(x):
        if torch.is_tensor(x):
            out.extend(x.detach().double().flatten().tolist())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                walk(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            out.append(float(x))

    walk(opt.state_dict())
    return out


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("wrapped", [False, True])
def test_broadcast_optimizer_state_for_every_torch_optimizer(name, wrapped):
    if wrapped and name == "LBFGS":
        pytest.skip("LBFGS runs backward several times per step: DistributedOptimizer cannot wrap it")
    r, n = hvd.rank(), hvd.size()
    model = make_model(0).double()
    opt = OPTIMIZERS[name](model.parameters())
    for group in opt.param_groups:  # hyper-parameters differ by rank; the root's must win
        group["lr"] *= r + 1
    if wrapped:
        opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())
    x, y = full_batch(0, n)

    def closure():
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    before = [p.detach().clone() for p in model.parameters()]
    # One real step gives the optimizer a state; then only the root keeps it (a wrapped optimizer
    # steps on every rank, its gradients being exchanged).
    if wrapped or r == 0:
        opt.step(closure) if name == "LBFGS" else (closure(), opt.step())
        if r != 0:
            opt.state.clear()
    with torch.no_grad():
        for p, b in zip(model.parameters(), before):
            p.copy_(b)
    model.zero_grad()
    hvd.broadcast_optimizer_state(opt, root_rank=0, model=model)
    # The model did not move (filling a fresh state must not take a real step).
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(g["lr"] == pytest.approx(OPTIMIZERS[name](model.parameters()).param_groups[0]["lr"])
               for g in opt.param_groups)
    prints = hvd.allgather_object(_state_fingerprint(opt))
    assert len(prints[0]) > 2 and all(p == prints[0] for p in prints)


def test_broadcast_optimizer_state_fills_a_fresh_state_and_sparse_embeddings():
    r, n = hvd.rank(), hvd.size()
    emb = torch.nn.Embedding(5, 2, sparse=True).double()
    hvd.broadcast_parameters(emb.state_dict(), root_rank=0)
    opt = torch.optim.SparseAdam(emb.parameters(), lr=0.1 * (r + 1))
    hvd.broadcast_optimizer_state(opt, root_rank=0, model=emb)
    state = opt.state[emb.weight]
    assert set(state) >= {"step", "exp_avg", "exp_avg_sq"}
    assert torch.equal(state["exp_avg"], torch.zeros(5, 2, dtype=torch.float64))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert emb.weight.grad is None
    with pytest.raises(ValueError, match="torch.optim.Optimizer"):
        hvd.broadcast_optimizer_state(object(), root_rank=0)
    with pytest.raises(ValueError, match="nn.Module"):
        hvd.broadcast_optimizer_state(opt, root_rank=0, model="model")


@pytest.mark.parametrize("wrapped", [False, True])
def test_broadcast_optimizer_state_carries_sparse_momentum_buffers(wrapped):
    # SGD with momentum on a sparse embedding keeps a sparse momentum buffer: it cannot go by
    # broadcast, and must not leave the other ranks waiting.
    r, n = hvd.rank(), hvd.size()
    emb = torch.nn.Embedding(5, 2, sparse=True).double()
    hvd.broadcast_parameters(emb.state_dict(), root_rank=0)
    opt = torch.optim.SGD(emb.parameters(), lr=0.1, momentum=0.9)
    if wrapped:
        opt = hvd.DistributedOptimizer(opt, named_parameters=emb.named_parameters())
    emb(torch.tensor([r % 5])).sum().backward()
    opt.step()
    if r != 0:
        opt.state.clear()
    hvd.broadcast_optimizer_state(opt, root_rank=0, model=emb)
    buf = opt.state[emb.weight]["momentum_buffer"]
    prints = hvd.allgather_object(buf.to_dense().tolist())
    assert all(p == prints[0] for p in prints)


def test_sparse_as_dense_gradients_keep_their_layout_for_accumulation():
    r, n = hvd.rank(), hvd.size()
    emb = torch.nn.Embedding(4, 2, sparse=True).double()
    opt = hvd.DistributedOptimizer(torch.optim.SGD(emb.parameters(), lr=0.1),
                                   named_parameters=emb.named_parameters(), sparse_as_dense=True)
    emb(torch.tensor([r % 4])).sum().backward()
    opt.step()
    assert emb.weight.grad.is_sparse and emb.weight.grad.sparse_dim() == 1
    # Zeroed in place, the next backward adds into the same sparse layout.
    opt.zero_grad(set_to_none=False)
    emb(torch.tensor([0])).sum().backward()
    opt.step()
    assert emb.weight.grad.is_sparse
