"""Collectives on torch tensors, with horovod.torch's names and semantics.

Every ``*_async`` call returns an integer handle at once; ``synchronize(handle)`` waits (with
the GIL released, Ctrl-C raising KeyboardInterrupt) and returns the result, ``poll(handle)``
tells whether it is done. Tensors must be CPU tensors of a supported dtype. The engine works
on the tensor's memory directly (zero-copy): do not touch a tensor passed to an async call
until its handle is synchronized. A non-contiguous tensor is made contiguous first and, for
the in-place forms, copied back at synchronize.
"""

import itertools
import math

import torch

from hora import _core
from hora.common.basics import rank, size
from hora.common.errors import invalid_argument
from hora.common.handles import wait_all_results
from hora.common.process_sets import _set_id, _set_rank, _set_size
from hora.common.vocabulary import (  # noqa: F401  (Adasum, Max, Min, Product: re-exported)
    ALLGATHER,
    ALLREDUCE,
    ALLTOALL,
    BARRIER,
    BROADCAST,
    DTYPES,
    REDUCESCATTER,
    Adasum,
    Average,
    Max,
    Min,
    Product,
    ReduceOp,
    Sum,
    reduce_op,
)
from hora.torch.compression import Compression

# torch dtype -> hora dtype name (hora.common.vocabulary.DTYPES gives its code).
_HORA_DTYPES = {
    torch.uint8: "u8",
    torch.int8: "i8",
    torch.int32: "i32",
    torch.int64: "i64",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float32: "f32",
    torch.float64: "f64",
    torch.int16: "i16",
    torch.bool: "bool",
}
# torch.uint16 exists from torch 2.3 on (with few kernels; the engine needs none of them).
if hasattr(torch, "uint16"):
    _HORA_DTYPES[torch.uint16] = "u16"
_DTYPE_CODES = {dt: DTYPES[name] for dt, name in _HORA_DTYPES.items()}

# handle id -> (native handle, function turning its result into the user's value)
_handles = {}
_ids = itertools.count()
# Unnamed operations are named "<op>.noname.<n>"; only unnamed calls advance n, so a rank that
# runs extra named operations (uneven batches, join) stays in step with the others.
_noname = itertools.count()
_barriers = itertools.count()


def _dtype_code(tensor, what):
    if not isinstance(tensor, torch.Tensor):
        raise invalid_argument(f"hora.torch.{what}: expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.device.type != "cpu":
        raise invalid_argument(f"hora.torch.{what}: only CPU tensors are supported (got one on {tensor.device})")
    if tensor.layout != torch.strided:
        raise invalid_argument(f"hora.torch.{what}: only dense tensors are supported (got {tensor.layout})")
    try:
        return _DTYPE_CODES[tensor.dtype]
    except KeyError:
        names = ", ".join(str(d).replace("torch.", "") for d in _DTYPE_CODES)
        raise invalid_argument(f"hora.torch.{what}: dtype {tensor.dtype} is not supported "
                               f"(supported: {names})") from None


def _op(average, op):
    return reduce_op(average, op, "hora.torch")


def _submit(kind, prefix, name, work, code, finish, op=Average, root=0, pre=1.0, post=1.0, splits=(), ps=0):
    hid = next(_ids)
    full = f"{prefix}.{name}" if name else f"{prefix}.noname.{next(_noname)}"
    nbytes = work.numel() * work.element_size()
    h = _core.enqueue(kind=kind, name=full, dtype=code, shape=list(work.shape), owner=work, ptr=work.data_ptr(),
                      nbytes=nbytes, op=int(op), root=root, prescale=float(pre), postscale=float(post),
                      splits=list(splits), process_set=ps)
    _handles[hid] = (h, finish)
    return hid


def _from_output(out, shape, dtype):
    if out is None or len(out) == 0 or math.prod(shape) == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(out, dtype=dtype).view(shape)


def poll(handle):
    """True if the operation behind ``handle`` has finished (never blocks)."""
    try:
        return _handles[handle][0].poll()
    except KeyError:
        raise invalid_argument(f"hora.torch.poll: unknown handle {handle} (already synchronized?)") from None


def synchronize(handle):
    """Waits for ``handle`` and returns its result (the output tensor, or a tuple for alltoall)."""
    try:
        h, finish = _handles[handle]
    except KeyError:
        raise invalid_argument(f"hora.torch.synchronize: unknown handle {handle} (already synchronized?)") from None
    try:
        res = h.wait()
    except KeyboardInterrupt:
        raise  # the handle stays valid: the caller may wait again
    except BaseException:
        del _handles[handle]
        raise
    del _handles[handle]
    return finish(res)


# ---------------------------------------------------------------------------------- allreduce


def allreduce_async_(tensor, average=None, name=None, op=None, prescale_factor=1.0, postscale_factor=1.0,
                     process_set=None):
    """Starts an in-place allreduce of ``tensor``; returns a handle for ``synchronize``."""
    op = _op(average, op)
    code = _dtype_code(tensor, "allreduce_async_")
    ps = _set_id(process_set, "hora.torch.allreduce_async_")
    if tensor.is_contiguous():
        return _submit(ALLREDUCE, "allreduce", name, tensor, code, lambda _r: tensor, op=op,
                       pre=prescale_factor, post=postscale_factor, ps=ps)
    work = tensor.contiguous()

    def finish(_r):
        with torch.no_grad():
            tensor.copy_(work)
        return tensor

    return _submit(ALLREDUCE, "allreduce", name, work, code, finish, op=op, pre=prescale_factor,
                   post=postscale_factor, ps=ps)


def allreduce_async(tensor, average=None, name=None, op=None, prescale_factor=1.0, postscale_factor=1.0,
                    process_set=None):
    """Starts an allreduce into a new tensor; ``synchronize`` returns it."""
    op = _op(average, op)
    code = _dtype_code(tensor, "allreduce_async")
    ps = _set_id(process_set, "hora.torch.allreduce_async")
    out = tensor.detach().clone(memory_format=torch.contiguous_format)
    return _submit(ALLREDUCE, "allreduce", name, out, code, lambda _r: out, op=op, pre=prescale_factor,
                   post=postscale_factor, ps=ps)


class _Chain:
    """Several hora.torch handles waited on as one, in order; each result is kept as it arrives,
    so a wait interrupted by Ctrl-C can be retried without losing the finished ones."""

    def __init__(self, hids):
        self.hids = hids
        self.results = {}

    def poll(self):
        return all(h in self.results or poll(h) for h in self.hids)

    def wait(self):
        first_error = None
        for h in self.hids:
            if h in self.results:
                continue
            try:
                self.results[h] = synchronize(h)
            except KeyboardInterrupt:
                raise
            except BaseException as e:
                self.results[h] = None
                if first_error is None:
                    first_error = e
        if first_error is not None:
            raise first_error
        return [self.results[h] for h in self.hids]


def sparse_allreduce_async(tensor, name, op, process_set=None):
    """Starts Horovod's sparse allreduce of a sparse COO ``tensor``: every rank's indices and
    values are allgathered, so the result holds all of them (duplicates add up when it is
    coalesced); ``op=Average`` divides the values by the number of ranks. ``synchronize``
    returns the sparse result. Only Sum and Average are defined on this path."""
    what = "hora.torch.sparse_allreduce_async"
    if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.sparse_coo:
        got = tensor.layout if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise invalid_argument(f"{what}: expected a sparse COO tensor, got {got}", tensor_name=name)
    op = _op(None, op)
    if op not in (Sum, Average):
        raise invalid_argument(f"{what}: op must be Sum or Average (got {op.name}); densify the "
                               "tensor for other reductions", tensor_name=name)
    _set_id(process_set, what)
    t = tensor.coalesce()
    # Allgather concatenates along dim 0, so the indices travel as (nnz, sparse_dim) rows.
    hv = allgather_async(t.values(), name=f"{name}.values" if name else None, process_set=process_set)
    hi = allgather_async(t.indices().t().contiguous(), name=f"{name}.indices" if name else None,
                         process_set=process_set)
    divisor = _set_size(process_set) if op == Average else 1
    shape, dtype = t.shape, t.dtype

    def finish(res):
        values, indices = res
        if divisor != 1:
            values = values / divisor
        # Checked: a rank whose tensor had another shape may have sent rows out of range.
        return torch.sparse_coo_tensor(indices.t(), values, shape, dtype=dtype, check_invariants=True)

    hid = next(_ids)
    _handles[hid] = (_Chain([hv, hi]), finish)
    return hid


class _AllreduceFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, name, op, pre, post, process_set):
        ctx.op, ctx.pre, ctx.post, ctx.ps = op, pre, post, process_set
        return synchronize(allreduce_async(tensor, name=name, op=op, prescale_factor=pre, postscale_factor=post,
                                           process_set=process_set))

    @staticmethod
    def backward(ctx, grad):
        out = synchronize(allreduce_async(grad, op=ctx.op, prescale_factor=ctx.pre, postscale_factor=ctx.post,
                                          process_set=ctx.ps))
        return out, None, None, None, None, None


def allreduce(tensor, average=None, name=None, compression=Compression.none, op=None, prescale_factor=1.0,
              postscale_factor=1.0, process_set=None):
    """Returns the reduction of ``tensor`` over all ranks (default op: Average); differentiable."""
    op = _op(average, op)
    _dtype_code(tensor, "allreduce")
    compressed, ctx = compression.compress(tensor)
    if torch.is_grad_enabled() and compressed.requires_grad:
        out = _AllreduceFn.apply(compressed, name, op, prescale_factor, postscale_factor, process_set)
    else:
        out = synchronize(allreduce_async(compressed, name=name, op=op, prescale_factor=prescale_factor,
                                          postscale_factor=postscale_factor, process_set=process_set))
    return compression.decompress(out, ctx)


def allreduce_(tensor, average=None, name=None, op=None, prescale_factor=1.0, postscale_factor=1.0,
               process_set=None):
    """Reduces ``tensor`` over all ranks in place and returns it."""
    return synchronize(allreduce_async_(tensor, average=average, name=name, op=op,
                                        prescale_factor=prescale_factor, postscale_factor=postscale_factor,
                                        process_set=process_set))


class _Group:
    """The native handles of one group, waited on as one; ``wait`` returns their results."""

    def __init__(self, handles):
        self.handles = handles

    def poll(self):
        return all(h.poll() for h in self.handles)

    def wait(self):
        return wait_all_results(self.handles)


def _submit_group(kind, prefix, name, works, finish, op=Average, pre=1.0, post=1.0, ps=0):
    """Submits ``works`` (contiguous tensors, each with its dtype code) as one engine group named
    ``<prefix>.<name>.<i>``: negotiated together and fused within the fusion threshold."""
    hid = next(_ids)
    base = f"{prefix}.{name}" if name else f"{prefix}.noname.{next(_noname)}"
    members = [(f"{base}.{i}", code, list(w.shape), w, w.data_ptr(), w.numel() * w.element_size())
               for i, (w, code) in enumerate(works)]
    natives = _core.enqueue_group(kind=kind, members=members, op=int(op), prescale=float(pre),
                                  postscale=float(post), process_set=ps)
    _handles[hid] = (_Group(natives), finish)
    return hid


def _grouped(tensors, name, op, pre, post, in_place, process_set=None):
    tensors = list(tensors)
    ps = _set_id(process_set, "hora.torch.grouped_allreduce")
    works, outs, copies = [], [], []
    for t in tensors:
        code = _dtype_code(t, "grouped_allreduce")
        if in_place:
            work = t if t.is_contiguous() else t.contiguous()
            if work is not t:
                copies.append((t, work))
            outs.append(t)
        else:
            work = t.detach().clone(memory_format=torch.contiguous_format)
            outs.append(work)
        works.append((work, code))

    def finish(_r):
        with torch.no_grad():
            for t, work in copies:
                t.copy_(work)
        return outs

    return _submit_group(ALLREDUCE, "grouped_allreduce", name, works, finish, op=op, pre=pre, post=post, ps=ps)


def grouped_allreduce_async(tensors, average=None, name=None, op=None, prescale_factor=1.0, postscale_factor=1.0,
                            process_set=None):
    """Starts one allreduce of a list of tensors (fused together); results are new tensors."""
    return _grouped(tensors, name, _op(average, op), prescale_factor, postscale_factor, in_place=False,
                    process_set=process_set)


def grouped_allreduce_async_(tensors, average=None, name=None, op=None, prescale_factor=1.0,
                             postscale_factor=1.0, process_set=None):
    """Starts an in-place allreduce of a list of tensors (fused together)."""
    return _grouped(tensors, name, _op(average, op), prescale_factor, postscale_factor, in_place=True,
                    process_set=process_set)


class _GroupedAllreduceFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, name, op, pre, post, process_set, *tensors):
        ctx.op, ctx.pre, ctx.post, ctx.ps = op, pre, post, process_set
        return tuple(synchronize(grouped_allreduce_async(list(tensors), name=name, op=op, prescale_factor=pre,
                                                         postscale_factor=post, process_set=process_set)))

    @staticmethod
    def backward(ctx, *grads):
        outs = synchronize(grouped_allreduce_async(list(grads), op=ctx.op, prescale_factor=ctx.pre,
                                                   postscale_factor=ctx.post, process_set=ctx.ps))
        return (None,) * 5 + tuple(outs)


def _grouped_differentiable(fn, start, tensors, name, compression, op, pre, post, process_set):
    """A reducing group's differentiable form: compressed, through the autograd function ``fn``
    when a gradient is wanted (else straight through ``start``, its async form), decompressed."""
    pairs = [compression.compress(t) for t in tensors]
    compressed = [c for c, _ in pairs]
    if torch.is_grad_enabled() and any(c.requires_grad for c in compressed):
        outs = list(fn.apply(name, op, pre, post, process_set, *compressed))
    else:
        outs = synchronize(start(compressed, name=name, op=op, prescale_factor=pre, postscale_factor=post,
                                 process_set=process_set))
    return [compression.decompress(o, ctx) for o, (_, ctx) in zip(outs, pairs)]


def grouped_allreduce(tensors, average=None, name=None, compression=Compression.none, op=None,
                      prescale_factor=1.0, postscale_factor=1.0, process_set=None):
    """Returns the reductions of a list of tensors, as a list of new tensors; differentiable.

    The tensors are one group: negotiated together and fused within the fusion threshold."""
    return _grouped_differentiable(_GroupedAllreduceFn, grouped_allreduce_async, tensors, name, compression,
                                   _op(average, op), prescale_factor, postscale_factor, process_set)


def grouped_allreduce_(tensors, average=None, name=None, op=None, prescale_factor=1.0, postscale_factor=1.0,
                       process_set=None):
    """Reduces a list of tensors in place; returns the list."""
    return synchronize(grouped_allreduce_async_(tensors, average=average, name=name, op=op,
                                                prescale_factor=prescale_factor,
                                                postscale_factor=postscale_factor, process_set=process_set))


# ---------------------------------------------------------------------------------- allgather


def allgather_async(tensor, name=None, process_set=None):
    """Starts an allgather: every rank's tensor concatenated along dim 0 (sizes may differ)."""
    code = _dtype_code(tensor, "allgather_async")
    ps = _set_id(process_set, "hora.torch.allgather_async")
    work = tensor.detach()
    if work.dim() == 0:
        work = work.reshape(1)
    work = work.contiguous()
    dtype = tensor.dtype

    def finish(res):
        out, shape, _splits = res
        return _from_output(out, shape, dtype)

    return _submit(ALLGATHER, "allgather", name, work, code, finish, ps=ps)


class _AllgatherFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, name, process_set):
        ctx.dim = tensor.shape[0] if tensor.dim() > 0 else 1
        ctx.ps = process_set
        return synchronize(allgather_async(tensor, name=name, process_set=process_set))

    @staticmethod
    def backward(ctx, grad):
        # Horovod's convention: the incoming gradients are averaged over the ranks, then each
        # rank takes its own rows.
        averaged = synchronize(allreduce_async(grad, op=Average, process_set=ctx.ps))
        dims = synchronize(allgather_async(torch.tensor([ctx.dim], dtype=torch.int64), process_set=ctx.ps))
        offset = int(dims[: _set_rank(ctx.ps)].sum())
        return averaged.narrow(0, offset, ctx.dim), None, None


def allgather(tensor, name=None, process_set=None):
    """Returns every rank's tensor concatenated along dim 0; differentiable."""
    if torch.is_grad_enabled() and tensor.requires_grad:
        return _AllgatherFn.apply(tensor, name, process_set)
    return synchronize(allgather_async(tensor, name=name, process_set=process_set))


def grouped_allgather_async(tensors, name=None, process_set=None):
    """Starts an allgather of each tensor of a list, as one group; ``synchronize`` returns the
    list of gathered tensors."""
    ps = _set_id(process_set, "hora.torch.grouped_allgather_async")
    works, dtypes = [], []
    for t in tensors:
        code = _dtype_code(t, "grouped_allgather_async")
        work = t.detach()
        if work.dim() == 0:
            work = work.reshape(1)
        works.append((work.contiguous(), code))
        dtypes.append(t.dtype)

    def finish(results):
        return [_from_output(out, shape, dt) for (out, shape, _s), dt in zip(results, dtypes)]

    return _submit_group(ALLGATHER, "grouped_allgather", name, works, finish, ps=ps)


class _GroupedAllgatherFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, name, process_set, *tensors):
        ctx.dims = [t.shape[0] if t.dim() > 0 else 1 for t in tensors]
        ctx.ps = process_set
        return tuple(synchronize(grouped_allgather_async(list(tensors), name=name, process_set=process_set)))

    @staticmethod
    def backward(ctx, *grads):
        # As for allgather: average the incoming gradients over the ranks (as one group), then
        # each rank takes its own rows of each.
        averaged = synchronize(grouped_allreduce_async(list(grads), op=Average, process_set=ctx.ps))
        mine = torch.tensor([ctx.dims], dtype=torch.int64)
        dims = synchronize(allgather_async(mine, process_set=ctx.ps))
        offsets = dims[: _set_rank(ctx.ps)].sum(dim=0)
        slices = [a.narrow(0, int(o), d) for a, o, d in zip(averaged, offsets, ctx.dims)]
        return (None, None) + tuple(slices)


def grouped_allgather(tensors, name=None, process_set=None):
    """Returns, for each tensor of a list, every rank's tensor concatenated along dim 0; the
    list is one group. Differentiable."""
    tensors = list(tensors)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return list(_GroupedAllgatherFn.apply(name, process_set, *tensors))
    return synchronize(grouped_allgather_async(tensors, name=name, process_set=process_set))


# ---------------------------------------------------------------------------------- broadcast


def _check_root(root_rank, what):
    if not isinstance(root_rank, int) or isinstance(root_rank, bool):
        raise invalid_argument(f"hora.torch.{what}: root_rank must be an int, got {type(root_rank).__name__}")


def broadcast_async_(tensor, root_rank, name=None, process_set=None):
    """Starts an in-place broadcast of ``root_rank``'s tensor."""
    _check_root(root_rank, "broadcast_async_")
    code = _dtype_code(tensor, "broadcast_async_")
    ps = _set_id(process_set, "hora.torch.broadcast_async_")
    if tensor.is_contiguous():
        return _submit(BROADCAST, "broadcast", name, tensor, code, lambda _r: tensor, root=root_rank, ps=ps)
    work = tensor.contiguous()

    def finish(_r):
        with torch.no_grad():
            tensor.copy_(work)
        return tensor

    return _submit(BROADCAST, "broadcast", name, work, code, finish, root=root_rank, ps=ps)


def broadcast_async(tensor, root_rank, name=None, process_set=None):
    """Starts a broadcast into a new tensor."""
    _check_root(root_rank, "broadcast_async")
    code = _dtype_code(tensor, "broadcast_async")
    ps = _set_id(process_set, "hora.torch.broadcast_async")
    out = tensor.detach().clone(memory_format=torch.contiguous_format)
    return _submit(BROADCAST, "broadcast", name, out, code, lambda _r: out, root=root_rank, ps=ps)


class _BroadcastFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, root_rank, name, process_set):
        ctx.root_rank, ctx.ps = root_rank, process_set
        return synchronize(broadcast_async(tensor, root_rank, name=name, process_set=process_set))

    @staticmethod
    def backward(ctx, grad):
        reduced = synchronize(allreduce_async(grad, op=Average, process_set=ctx.ps))
        if rank() != ctx.root_rank:
            reduced.zero_()
        return reduced, None, None, None


def broadcast(tensor, root_rank, name=None, process_set=None):
    """Returns ``root_rank``'s tensor on every rank (a new tensor); differentiable."""
    if torch.is_grad_enabled() and tensor.requires_grad:
        return _BroadcastFn.apply(tensor, root_rank, name, process_set)
    return synchronize(broadcast_async(tensor, root_rank, name=name, process_set=process_set))


def broadcast_(tensor, root_rank, name=None, process_set=None):
    """Overwrites ``tensor`` with ``root_rank``'s; returns it."""
    return synchronize(broadcast_async_(tensor, root_rank, name=name, process_set=process_set))


# ----------------------------------------------------------------------- alltoall, reducescatter


def _splits_list(splits):
    if splits is None:
        return []
    if isinstance(splits, torch.Tensor):
        return [int(s) for s in splits.tolist()]
    return [int(s) for s in splits]


def alltoall_async(tensor, splits=None, name=None, process_set=None):
    """Starts an alltoall: ``splits[d]`` rows (dim 0) go to rank d (None: even split).

    ``synchronize`` returns ``(output, received_splits)``.
    """
    code = _dtype_code(tensor, "alltoall_async")
    ps = _set_id(process_set, "hora.torch.alltoall_async")
    work = tensor.detach().contiguous()
    dtype = tensor.dtype

    def finish(res):
        out, shape, received = res
        return _from_output(out, shape, dtype), torch.tensor(received, dtype=torch.int32)

    return _submit(ALLTOALL, "alltoall", name, work, code, finish, splits=_splits_list(splits), ps=ps)


class _AlltoallFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, splits, name, process_set):
        out, received = synchronize(alltoall_async(tensor, splits=splits, name=name, process_set=process_set))
        ctx.received, ctx.ps = received, process_set
        ctx.mark_non_differentiable(received)
        return out, received

    @staticmethod
    def backward(ctx, grad, _dead):
        out, _ = synchronize(alltoall_async(grad, splits=ctx.received, process_set=ctx.ps))
        return out, None, None, None


def alltoall(tensor, splits=None, name=None, process_set=None):
    """Scatters slices of ``tensor`` to every rank and gathers theirs.

    Returns the output tensor, or ``(output, received_splits)`` when ``splits`` is given.
    """
    if torch.is_grad_enabled() and tensor.requires_grad:
        out, received = _AlltoallFn.apply(tensor, splits, name, process_set)
    else:
        out, received = synchronize(alltoall_async(tensor, splits=splits, name=name, process_set=process_set))
    return out if splits is None else (out, received)


def reducescatter_async(tensor, name=None, op=Average, process_set=None, prescale_factor=1.0,
                        postscale_factor=1.0):
    """Starts a reducescatter: reduce, then rank r keeps its share of dim 0 (earlier ranks get
    one more row when uneven)."""
    code = _dtype_code(tensor, "reducescatter_async")
    ps = _set_id(process_set, "hora.torch.reducescatter_async")
    work = tensor.detach().contiguous()
    dtype = tensor.dtype

    def finish(res):
        out, shape, _ = res
        return _from_output(out, shape, dtype)

    return _submit(REDUCESCATTER, "reducescatter", name, work, code, finish, op=_op(None, op),
                   pre=prescale_factor, post=postscale_factor, ps=ps)


class _ReducescatterFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, name, op, pre, post, process_set):
        ctx.op, ctx.scale, ctx.ps = op, pre * post, process_set
        return synchronize(reducescatter_async(tensor, name=name, op=op, prescale_factor=pre,
                                               postscale_factor=post, process_set=process_set))

    @staticmethod
    def backward(ctx, grad):
        # Horovod's convention: a Sum's gradient is scaled by the set's size, an Average's is
        # not; both by the pre- and postscale factors.
        scale = ctx.scale * (_set_size(ctx.ps) if ctx.op == Sum else 1)
        out = synchronize(allgather_async(grad.contiguous(), process_set=ctx.ps))
        return (out * scale if scale != 1 else out), None, None, None, None, None


def reducescatter(tensor, name=None, compression=Compression.none, op=Average, process_set=None,
                  prescale_factor=1.0, postscale_factor=1.0):
    """Returns this rank's share of the reduction of ``tensor`` (split along dim 0)."""
    _dtype_code(tensor, "reducescatter")
    compressed, ctx = compression.compress(tensor)
    if torch.is_grad_enabled() and compressed.requires_grad:
        out = _ReducescatterFn.apply(compressed, name, _op(None, op), prescale_factor, postscale_factor,
                                     process_set)
    else:
        out = synchronize(reducescatter_async(compressed, name=name, op=op, prescale_factor=prescale_factor,
                                              postscale_factor=postscale_factor, process_set=process_set))
    return compression.decompress(out, ctx)


def grouped_reducescatter_async(tensors, name=None, op=Average, process_set=None, prescale_factor=1.0,
                                postscale_factor=1.0):
    """Starts a reducescatter of each tensor of a list, as one group; ``synchronize`` returns
    the list of this rank's shares."""
    op = _op(None, op)
    ps = _set_id(process_set, "hora.torch.grouped_reducescatter_async")
    works, dtypes = [], []
    for t in tensors:
        code = _dtype_code(t, "grouped_reducescatter_async")
        works.append((t.detach().contiguous(), code))
        dtypes.append(t.dtype)

    def finish(results):
        return [_from_output(out, shape, dt) for (out, shape, _s), dt in zip(results, dtypes)]

    return _submit_group(REDUCESCATTER, "grouped_reducescatter", name, works, finish, op=op, pre=prescale_factor,
                         post=postscale_factor, ps=ps)


class _GroupedReducescatterFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, name, op, pre, post, process_set, *tensors):
        ctx.op, ctx.scale, ctx.ps = op, pre * post, process_set
        return tuple(synchronize(grouped_reducescatter_async(list(tensors), name=name, op=op, prescale_factor=pre,
                                                             postscale_factor=post, process_set=process_set)))

    @staticmethod
    def backward(ctx, *grads):
        # As for reducescatter: a Sum's gradient is scaled by the set's size, an Average's is not;
        # both by the pre- and postscale factors.
        scale = ctx.scale * (_set_size(ctx.ps) if ctx.op == Sum else 1)
        outs = synchronize(grouped_allgather_async([g.contiguous() for g in grads], process_set=ctx.ps))
        return (None,) * 5 + tuple(o * scale if scale != 1 else o for o in outs)


def grouped_reducescatter(tensors, name=None, compression=Compression.none, op=Average, process_set=None,
                          prescale_factor=1.0, postscale_factor=1.0):
    """Returns this rank's share of the reduction of each tensor of a list (one group);
    differentiable."""
    return _grouped_differentiable(_GroupedReducescatterFn, grouped_reducescatter_async, tensors, name,
                                   compression, _op(None, op), prescale_factor, postscale_factor, process_set)


# ------------------------------------------------------------------------------ barrier, join


def barrier(process_set=None):
    """Waits until every rank (of ``process_set``) calls barrier."""
    ps = _set_id(process_set, "hora.torch.barrier")
    h = _core.enqueue(kind=BARRIER, name=f"barrier.python.{ps}.{next(_barriers)}", dtype=DTYPES["u8"], shape=[0],
                      process_set=ps)
    h.wait()


def join(device=-1):
    """Declares this rank out of data: it joins other ranks' collectives with neutral input
    until every rank has joined. Returns the rank that joined last."""
    return _core.join()
