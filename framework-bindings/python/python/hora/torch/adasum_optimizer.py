"""DistributedOptimizer(op=Adasum): Horovod's delta optimizer.

Adasum combines *updates*, not gradients: on each rank the wrapped optimizer first takes its
own step, and what changed is combined over ranks. Per parameter, once its gradient is final
for this step (after ``backward_passes_per_step`` backward passes), its hook

1. remembers the parameter's value (``start``),
2. runs the wrapped optimizer's step on that parameter alone (its state, momentum for one, is
   the local optimizer's),
3. turns the parameter into the change, ``delta = p - start``, and starts an Adasum allreduce
   of it (compressed, in place),

so communication overlaps the rest of backward. ``step()`` waits for every delta and sets
``p = start + Adasum(deltas)``. Parameters whose hook did not fire are handled in ``step()``.
As in Horovod there is no gradient predivision (Adasum is scale-invariant), ``synchronize()``
does nothing and ``skip_synchronize()`` is refused.
"""

import contextlib

import torch

from hora.torch.mpi_ops import Adasum, allreduce_async_, synchronize
from hora.torch.optimizer import _CountsBackwardPasses, _parameter_names


class _DistributedAdasumMixin(_CountsBackwardPasses):
    """Put in front of the user's optimizer class by DistributedOptimizer(op=Adasum)."""

    def __init__(self, params, named_parameters, compression, backward_passes_per_step, process_set=None):
        super().__init__(params)
        self._compression = compression
        self._process_set = process_set
        self.backward_passes_per_step = int(backward_passes_per_step)
        all_params = [p for group in self.param_groups for p in group["params"]]
        self._names = _parameter_names(named_parameters, all_params)
        self._params = [p for p in all_params if p.requires_grad]
        self._delay = {id(p): self.backward_passes_per_step for p in self._params}
        self._starts = {id(p): torch.zeros_like(p, requires_grad=False) for p in self._params}
        self._pending = {}  # id(p) -> (handle, compressed delta, ctx, p)
        self._hooks = [p.register_post_accumulate_grad_hook(self._hook) for p in self._params]

    def _start(self, p):
        """The local step on ``p`` alone, then the Adasum allreduce of its change."""
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        start = self._starts[id(p)]
        stashed = [group["params"] for group in self.param_groups]
        for group in self.param_groups:
            group["params"] = [p] if any(q is p for q in group["params"]) else []
        try:
            with torch.no_grad():
                start.copy_(p)
            super().step()
        finally:
            for group, params in zip(self.param_groups, stashed):
                group["params"] = params
        with torch.no_grad():
            p.sub_(start)
        compressed, ctx = self._compression.compress(p.data)
        h = allreduce_async_(compressed, name=self._names[id(p)], op=Adasum,
                             process_set=self._process_set)
        self._pending[id(p)] = (h, compressed, ctx, p)

    def synchronize(self):
        """Nothing to do: Adasum's deltas are applied by ``step()`` (as in Horovod)."""

    @contextlib.contextmanager
    def skip_synchronize(self):
        """Refused: the Adasum optimizer has no separate synchronization to skip."""
        raise AssertionError("Skipping synchronization is not supported when using Adasum optimizer.")
        yield  # pragma: no cover

    def step(self, closure=None):
        """Waits for every parameter's combined change and applies it to its starting value."""
        loss = closure() if closure is not None else None
        for p in self._params:
            if id(p) not in self._pending:
                self._start(p)
        for h, compressed, ctx, p in self._pending.values():
            delta = self._compression.decompress(synchronize(h), ctx)
            start = self._starts[id(p)]
            with torch.no_grad():
                start.add_(delta.to(start.dtype))
                p.copy_(start)
            self._delay[id(p)] = self.backward_passes_per_step
        self._pending.clear()
        return loss

    def zero_grad(self, set_to_none=True):
        """Like the wrapped optimizer's, but refuses while allreduces are in flight."""
        if self._pending:
            raise AssertionError("optimizer.zero_grad() was called after loss.backward() but before "
                                 "optimizer.step() or optimizer.synchronize()")
        return super().zero_grad(set_to_none=set_to_none)
