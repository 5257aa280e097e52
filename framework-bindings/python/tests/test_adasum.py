"""op=Adasum from torch and TensorFlow, and DistributedOptimizer(op=Adasum) (Horovod's delta
optimizer), against a sequential reference of the same recursion written here in numpy."""

import numpy as np
import pytest
import torch

import hora
import hora.torch as hvd


def adasum_ref(vectors, round_to):
    """Fold ranks p..n into r-p, then the balanced tree in rank order; f64 sums, each
    combination rounded by ``round_to`` (the dtype's rounding)."""

    def pair(a, b):
        dot, aa, bb = float(a @ b), float(a @ a), float(b @ b)
        tiny = np.sqrt(np.finfo(np.float64).tiny)
        ca = 1.0 - dot / (2 * aa) if aa >= tiny else 1.0
        cb = 1.0 - dot / (2 * bb) if bb >= tiny else 1.0
        return round_to(ca * a + cb * b)

    vs = [np.asarray(v, np.float64) for v in vectors]
    p = 1 << (len(vs).bit_length() - 1)
    for r in range(len(vs) - p):
        vs[r] = pair(vs[r], vs[r + p])
    vs = vs[:p]
    while len(vs) > 1:
        vs = [pair(vs[i], vs[i + 1]) for i in range(0, len(vs), 2)]
    return vs[0]


def rounder(dtype):
    return lambda v: torch.from_numpy(v).to(dtype).to(torch.float64).numpy()


def inputs(r, n, seed):
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(n, generator=g, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed * 100 + r + 1)
    return shared + 0.6 * torch.randn(n, generator=g, dtype=torch.float64) + 0.1 * r


TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 8e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [1, 7, 5000])
def test_allreduce_adasum_matches_the_reference(dtype, n):
    size, rank = hvd.size(), hvd.rank()
    mine = inputs(rank, n, n).to(dtype)
    got = hvd.allreduce(mine, op=hvd.Adasum, name=f"ada.{dtype}.{n}")
    assert got.dtype == dtype
    want = adasum_ref([inputs(r, n, n).to(dtype).double().numpy() for r in range(size)], rounder(dtype))
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got.double().numpy(), want, rtol=0, atol=TOL[dtype] * scale)
    if size > 1:
        # Neither the sum nor the average: the inputs are far from parallel or orthogonal.
        total = sum(inputs(r, n, n).numpy() for r in range(size))
        if n > 1:
            assert np.abs(want - total).max() > 0.05 and np.abs(want - total / size).max() > 0.05


def test_adasum_prescale_postscale_and_in_place():
    size = hvd.size()
    t = inputs(hvd.rank(), 64, 3).float()
    got = hvd.allreduce(t, op=hvd.Adasum, prescale_factor=0.5, postscale_factor=3.0, name="ada.scaled")
    want = adasum_ref([0.5 * inputs(r, 64, 3).float().double().numpy() for r in range(size)],
                      rounder(torch.float32)) * 3.0
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-5, atol=1e-5)
    hvd.allreduce_(t, op=hvd.Adasum, name="ada.inplace")
    want = adasum_ref([inputs(r, 64, 3).float().double().numpy() for r in range(size)], rounder(torch.float32))
    np.testing.assert_allclose(t.double().numpy(), want, rtol=1e-5, atol=1e-5)


def test_adasum_of_integers_is_refused_naming_the_tensor():
    with pytest.raises(hora.InvalidArgumentError, match=r"ada\.int.*float"):
        hvd.allreduce(torch.ones(4, dtype=torch.int32), op=hvd.Adasum, name="ada.int")
    with pytest.raises(hora.InvalidArgumentError, match="allreduce only"):
        hvd.reducescatter(torch.ones(4 * hvd.size()), op=hvd.Adasum, name="ada.rs")


def test_tensorflow_adasum_matches_torch():
    tf = pytest.importorskip("tensorflow")
    import hora.tensorflow as htf

    x = inputs(hvd.rank(), 300, 11).float()
    got = htf.allreduce(tf.constant(x.numpy()), op=htf.Adasum, name="ada.tf")
    want = hvd.allreduce(x, op=hvd.Adasum, name="ada.tf.torch")
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    import hora.keras as hk

    assert hk.Adasum == htf.Adasum == hvd.Adasum == 2
    with pytest.raises(hora.InvalidArgumentError, match="delta optimizer"):
        htf.DistributedOptimizer(tf.compat.v1.train.GradientDescentOptimizer(0.1), op=htf.Adasum)


def model_and_batch(seed):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    g = torch.Generator().manual_seed(seed)
    return model, torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randn(8, 2, generator=g,
                                                                                       dtype=torch.float64)


def test_distributed_optimizer_adasum_combines_the_local_steps():
    size, rank = hvd.size(), hvd.rank()
    lr = 0.1
    model, x, y = model_and_batch(100 + rank)
    start = [p.detach().clone() for p in model.parameters()]
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
                                   named_parameters=model.named_parameters(), op=hvd.Adasum)
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    opt.step()
    # Every rank's local SGD step is -lr * grad (momentum starts at zero); the update is their
    # Adasum, added to the starting values.
    for i, (p, p0, g) in enumerate(zip(model.parameters(), start, grads)):
        all_g = hvd.allgather(g.flatten().unsqueeze(0), name=f"ada.grads.{i}")
        want = p0.flatten().numpy() + adasum_ref([(-lr * all_g[r]).numpy() for r in range(size)], lambda v: v)
        np.testing.assert_allclose(p.detach().flatten().numpy(), want, rtol=1e-12, atol=1e-12)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()]).unsqueeze(0)
    gathered = hvd.allgather(flat, name="ada.params")
    assert all(torch.equal(gathered[0], gathered[k]) for k in range(size))
    with pytest.raises(AssertionError, match="Skipping synchronization"):
        with opt.skip_synchronize():
            pass
    with pytest.raises(ValueError, match="gradient_predivide_factor"):
        hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=lr), op=hvd.Adasum,
                                 gradient_predivide_factor=2.0)


def test_distributed_optimizer_adasum_accumulates_backward_passes_and_trains():
    model, x, y = model_and_batch(200 + hvd.rank())
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.05),
                                   named_parameters=model.named_parameters(), op=hvd.Adasum,
                                   backward_passes_per_step=2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        for half in (slice(0, 4), slice(4, 8)):
            loss = torch.nn.functional.mse_loss(model(x[half]), y[half]) / 2
            loss.backward()
        opt.step()
        with torch.no_grad():
            losses.append(float(torch.nn.functional.mse_loss(model(x), y)))
    assert losses[-1] < losses[0]
    opt.zero_grad()
    for _ in range(2):
        torch.nn.functional.mse_loss(model(x), y).backward()
    with pytest.raises(AssertionError, match="backward_passes_per_step"):
        torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
