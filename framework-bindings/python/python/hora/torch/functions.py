"""Whole-model helpers: broadcast parameters, optimizer state and Python objects."""

import io
import pickle

import torch

from hora.common.basics import rank
from hora.torch.mpi_ops import _DTYPE_CODES, allgather, broadcast_, broadcast_async_, synchronize

try:  # cloudpickle handles lambdas and local classes; plain pickle is the fallback
    import cloudpickle as _pickler
except ImportError:  # pragma: no cover - depends on the environment
    _pickler = pickle


def broadcast_parameters(params, root_rank=0, process_set=None):
    """Overwrites parameters (a ``state_dict()`` or ``named_parameters()``) with ``root_rank``'s.

    Every rank must pass the same parameter names in the same structure.
    """
    if isinstance(params, dict):
        items = sorted(params.items())
    elif isinstance(params, list) or hasattr(params, "__iter__"):
        items = [p if isinstance(p, tuple) else (None, p) for p in params]
    else:
        raise ValueError(f"hora.torch.broadcast_parameters: invalid params of type {type(params).__name__}")
    handles = []
    for name, p in items:
        if p is None or not isinstance(p, torch.Tensor):
            continue
        handles.append(broadcast_async_(p.data if isinstance(p, torch.nn.Parameter) else p, root_rank,
                                        name=name, process_set=process_set))
    for h in handles:
        synchronize(h)


def broadcast_object(obj, root_rank=0, name=None, process_set=None):
    """Returns ``root_rank``'s ``obj`` (any picklable object) on every rank."""
    # Not the type of obj: ranks other than the root often pass None, and the name must agree.
    name = name or "broadcast_object"
    if rank() == root_rank:
        buf = io.BytesIO()
        _pickler.dump(obj, buf)
        data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        length = torch.tensor([data.numel()], dtype=torch.int64)
    else:
        data = None
        length = torch.zeros(1, dtype=torch.int64)
    broadcast_(length, root_rank, name=f"{name}.sz", process_set=process_set)
    if data is None:
        data = torch.empty(int(length[0]), dtype=torch.uint8)
    broadcast_(data, root_rank, name=f"{name}.t", process_set=process_set)
    if rank() == root_rank:
        return obj
    return pickle.loads(data.numpy().tobytes())


def allgather_object(obj, name=None, process_set=None):
    """Returns the list of every rank's ``obj``, in rank order."""
    # Not the type of obj: it may differ by rank, and the name must agree.
    name = name or "allgather_object"
    payload = _pickler.dumps(obj)
    data = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    sizes = allgather(torch.tensor([data.numel()], dtype=torch.int64), name=f"{name}.sz",
                      process_set=process_set).tolist()
    gathered = allgather(data, name=f"{name}.t", process_set=process_set).numpy().tobytes()
    out, off = [], 0
    for n in sizes:
        out.append(pickle.loads(gathered[off : off + n]))
        off += n
    return out


class _Slot:
    """Stands for one tensor of the root's optimizer state in the structure sent to the others."""

    __slots__ = ("index", "shape", "dtype")

    def __init__(self, index, shape, dtype):
        self.index, self.shape, self.dtype = index, shape, dtype


def _map_leaves(x, fn):
    """``x`` (a state dict: dicts, lists and tuples of values) with ``fn`` applied to every
    tensor and _Slot in it."""
    if torch.is_tensor(x) or isinstance(x, _Slot):
        return fn(x)
    if isinstance(x, dict):
        return type(x)((k, _map_leaves(v, fn)) for k, v in x.items())
    if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
        return type(x)(_map_leaves(v, fn) for v in x)
    return x


def _inner_step(optimizer):
    """The wrapped torch optimizer's own step: a DistributedOptimizer's would start collectives
    that only this rank is running."""
    for klass in type(optimizer).__mro__:
        if not klass.__module__.startswith("hora.") and "step" in vars(klass):
            return klass.step(optimizer)
    return optimizer.step()


def _initialize_state(optimizer, model):
    """Gives a fresh optimizer its state, as Horovod does: one step on zero gradients (sparse for
    SparseAdam, and for a model's sparse embeddings under SGD). Parameters and gradients are put
    back afterwards, so weight decay and the like do not move the model."""
    sparse = set()
    if model is not None:
        for m in model.modules():
            if isinstance(m, torch.nn.Embedding) and m.sparse:
                sparse.update(id(p) for p in m.parameters())
    params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
    saved = [(p, p.detach().clone(), p.grad) for p in params]
    try:
        for p in params:
            p.grad = torch.zeros_like(p)
            if isinstance(optimizer, torch.optim.SparseAdam) or (
                    isinstance(optimizer, torch.optim.SGD) and id(p) in sparse):
                p.grad = p.grad.to_sparse()
        _inner_step(optimizer)
    finally:
        with torch.no_grad():
            for p, data, grad in saved:
                p.copy_(data)
                p.grad = grad


def broadcast_optimizer_state(optimizer, root_rank=0, model=None, process_set=None):
    """Overwrites the optimizer's state and hyper-parameters (learning rate, betas, ...) with
    ``root_rank``'s (a global rank; the ranks of ``process_set`` when given).

    A fresh optimizer is first given its state as in Horovod (one step on zero gradients, the
    model left as it was; ``model`` names the sparse embeddings whose state SGD keeps sparse).
    The root then sends the structure of its state, and its tensors go by in-place broadcasts,
    so the others need not have the same structure (LBFGS's history lists, a state the root
    loaded from a checkpoint).
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError("hora.torch.broadcast_optimizer_state: expected a torch.optim.Optimizer, "
                         f"got {type(optimizer).__name__}")
    if model is not None and not isinstance(model, torch.nn.Module):
        raise ValueError("hora.torch.broadcast_optimizer_state: model must be a torch.nn.Module, "
                         f"got {type(model).__name__}")
    # LBFGS's step needs a closure, and its state is only history: it goes as it is.
    if not optimizer.state_dict()["state"] and not isinstance(optimizer, torch.optim.LBFGS):
        _initialize_state(optimizer, model)
    root = rank() == root_rank
    tensors = []

    def hollow(t):
        # What a broadcast cannot carry (a sparse momentum buffer of SGD on a sparse embedding,
        # an unsupported dtype) travels inside the pickled structure instead, so the root never
        # fails halfway while the others wait on broadcasts it will not send.
        if t.layout != torch.strided or t.device.type != "cpu" or t.dtype not in _DTYPE_CODES:
            return t
        tensors.append(t)
        return _Slot(len(tensors) - 1, tuple(t.shape), t.dtype)

    def allocate(slot):
        if not isinstance(slot, _Slot):
            return slot  # one the root sent inside the structure
        tensors.append(torch.empty(slot.shape, dtype=slot.dtype))
        return tensors[-1]

    skeleton = _map_leaves(optimizer.state_dict(), hollow) if root else None
    skeleton = broadcast_object(skeleton, root_rank, name="optimizer_state", process_set=process_set)
    state = None if root else _map_leaves(skeleton, allocate)
    handles = [broadcast_async_(t, root_rank, name=f"optimizer_state.{i}", process_set=process_set)
               for i, t in enumerate(tensors)]
    first_error = None
    for h in handles:  # every one, so none is left lent to the engine
        try:
            synchronize(h)
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            first_error = first_error or e
    if first_error is not None:
        raise first_error
    if not root:
        optimizer.load_state_dict(state)
