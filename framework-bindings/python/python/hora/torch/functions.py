"""Whole-model helpers: broadcast parameters, optimizer state and Python objects."""

import io
import pickle

import torch

from hora.common.basics import rank
from hora.torch.mpi_ops import allgather, broadcast_, broadcast_async_, synchronize

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


def broadcast_optimizer_state(optimizer, root_rank=0):
    """Overwrites the optimizer's state and hyper-parameters with ``root_rank``'s."""
    if isinstance(optimizer, torch.optim.LBFGS):
        raise ValueError("hora.torch.broadcast_optimizer_state: LBFGS is not supported")
    state = broadcast_object(optimizer.state_dict() if rank() == root_rank else None, root_rank,
                             name="optimizer_state")
    if rank() != root_rank:
        optimizer.load_state_dict(state)
