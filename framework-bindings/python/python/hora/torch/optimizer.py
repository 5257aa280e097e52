"""DistributedOptimizer: averages gradients over ranks, overlapping communication with backward.

Each parameter gets a post-accumulate-grad hook. When a gradient is final for this step (after
``backward_passes_per_step`` backward passes), the hook starts its allreduce at once, so
communication runs while backward continues with earlier layers. ``step()`` (or an explicit
``synchronize()``) waits for the allreduces, writes the averaged gradients back, and then runs
the wrapped optimizer's update.
"""

import contextlib
import warnings

import torch

from hora.torch.compression import Compression
from hora.common.vocabulary import reduce_op
from hora.common.process_sets import _set_id, _set_size
from hora.torch.mpi_ops import Adasum, Average, _grouped, allreduce_async_, sparse_allreduce_async, synchronize

# Marks a pending entry whose gradient took the sparse (allgather) path.
_SPARSE = object()


def _parameter_names(named_parameters, all_params):
    """{id(parameter): name} for every parameter the optimizer updates; names must be unique and
    cover every parameter (``noname.<i>`` when none are given)."""
    if named_parameters is None:
        return {id(p): f"noname.{i}" for i, p in enumerate(all_params)}
    named = list(named_parameters)
    if any(not isinstance(x, tuple) or len(x) != 2 for x in named):
        raise ValueError("named_parameters must be a sequence of (name, parameter) pairs, "
                         "e.g. model.named_parameters()")
    names = [n for n, _ in named]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"parameter names must be unique; duplicated: {', '.join(dups)}")
    known = {id(p) for _, p in named}
    missing = [p for p in all_params if id(p) not in known]
    if missing:
        raise ValueError(f"named_parameters does not name {len(missing)} of the optimizer's "
                         "parameters; pass every parameter the optimizer updates")
    return {id(p): n for n, p in named}


class _CountsBackwardPasses:
    """The gradient hook both distributed optimizers share: counts a parameter's backward
    passes down from ``backward_passes_per_step`` (in ``_delay``) and calls ``_start(p)`` on the
    last one."""

    def set_backward_passes_per_step(self, passes):
        """Changes how many backward passes make one step; every parameter's count restarts."""
        passes = int(passes)
        if passes < 1:
            raise ValueError("backward_passes_per_step must be at least 1")
        self.backward_passes_per_step = passes
        for key in self._delay:
            self._delay[key] = passes

    def _hook(self, p):
        key = id(p)
        if self._delay[key] <= 0:
            raise AssertionError(
                "Gradients were computed more than backward_passes_per_step times before call to "
                "step(). Increase backward_passes_per_step to accumulate gradients locally.")
        self._delay[key] -= 1
        if self._delay[key] == 0:
            self._start(p)


class _DistributedMixin(_CountsBackwardPasses):
    """Put in front of the user's optimizer class (see DistributedOptimizer)."""

    def __init__(self, params, named_parameters, compression, backward_passes_per_step, op,
                 gradient_predivide_factor, groups, sparse_as_dense, process_set=None):
        super().__init__(params)
        _set_id(process_set, "hora.torch.DistributedOptimizer")
        self._process_set = process_set
        # Ranks outside the set keep their gradients local (Horovod's behaviour); in it,
        # the set's size decides whether there is anyone to average with.
        if process_set is None or process_set.included():
            self._peers = _set_size(process_set)
        else:
            self._peers = 1
        self._compression = compression
        self._op = reduce_op(None, op, "hora.torch.DistributedOptimizer")
        if gradient_predivide_factor != 1.0 and self._op != Average:
            raise ValueError("gradient_predivide_factor needs op=Average")
        self._predivide = float(gradient_predivide_factor)
        self._sparse_as_dense = sparse_as_dense
        # Parameters seen with a sparse gradient: when one has no gradient in a step, it still
        # joins the other ranks' sparse path (an empty sparse gradient), not a dense allreduce.
        self._sparse_params = {}  # id(p) -> the sparse_dim of its gradients
        self.backward_passes_per_step = int(backward_passes_per_step)
        if self.backward_passes_per_step < 1:
            raise ValueError("backward_passes_per_step must be at least 1")

        all_params = [p for group in self.param_groups for p in group["params"]]
        self._names = _parameter_names(named_parameters, all_params)

        self._params = [p for p in all_params if p.requires_grad]
        self._delay = {id(p): self.backward_passes_per_step for p in self._params}
        self._pending = {}  # id(p) -> (handle or None, compressed tensor, ctx, p)
        self._groups = self._make_groups(groups)
        self._group_ready = [set() for _ in self._groups]
        self._group_handles = {}  # group index -> (handle, [(p, compressed, ctx)])
        self._synchronized = False
        self._should_synchronize = True
        self._hooks = []
        if self._peers > 1:
            for p in self._params:
                self._hooks.append(p.register_post_accumulate_grad_hook(self._hook))

    # ------------------------------------------------------------------------------- set-up

    def _make_groups(self, groups):
        if groups is None:
            self._group_of = {}
            return []
        if isinstance(groups, int):
            if groups < 1:
                raise ValueError("groups must be a positive int or a list of parameter lists")
            n = len(self._params)
            bounds = [round(i * n / groups) for i in range(groups + 1)]
            lists = [self._params[bounds[i] : bounds[i + 1]] for i in range(groups)]
        else:
            lists = [list(g) for g in groups]
        lists = [g for g in lists if g]
        self._group_of = {}
        for gi, g in enumerate(lists):
            for p in g:
                self._group_of[id(p)] = gi
        return lists

    def _scales(self):
        if self._op == Average:
            # The engine divides by size for Average; split that across pre/post-scaling.
            return 1.0 / self._predivide, self._predivide
        return 1.0, 1.0

    # ------------------------------------------------------------------------------ hooks

    def _fill_missing_grad(self, p):
        if p.grad is None:
            p.grad = torch.zeros_like(p)
            if id(p) in self._sparse_params:
                p.grad = p.grad.to_sparse(sparse_dim=self._sparse_params[id(p)])
        elif p.grad.is_sparse:
            self._sparse_params[id(p)] = p.grad.sparse_dim()

    def _compressed_grad(self, p):
        self._fill_missing_grad(p)
        grad = p.grad
        if grad.is_sparse:
            # The gradient stays sparse for the wrapped optimizer (SparseAdam needs it); only
            # what travels is dense.
            grad = grad.to_dense()
        compressed, ctx = self._compression.compress(grad)
        return compressed, ctx

    def _takes_sparse_path(self, p):
        self._fill_missing_grad(p)
        return p.grad.is_sparse and not self._sparse_as_dense

    def _start_sparse(self, p):
        h = sparse_allreduce_async(p.grad, name=self._names[id(p)], op=self._op,
                                   process_set=self._process_set)
        self._pending[id(p)] = (h, None, _SPARSE, p)

    def _start(self, p):
        gi = self._group_of.get(id(p))
        if gi is None:
            if self._takes_sparse_path(p):
                self._start_sparse(p)
                return
            compressed, ctx = self._compressed_grad(p)
            pre, post = self._scales()
            h = allreduce_async_(compressed, name=self._names[id(p)], op=self._op, prescale_factor=pre,
                                 postscale_factor=post, process_set=self._process_set)
            self._pending[id(p)] = (h, compressed, ctx, p)
            return
        if self._takes_sparse_path(p):
            self._start_sparse(p)
        ready = self._group_ready[gi]
        ready.add(id(p))
        if len(ready) == len(self._groups[gi]):
            self._start_group(gi)

    def _start_group(self, gi):
        items = []
        for p in self._groups[gi]:
            # Members with sparse gradients take their own (allgather) path, outside the group.
            if id(p) in self._pending:
                continue
            if self._takes_sparse_path(p):
                self._start_sparse(p)
                continue
            compressed, ctx = self._compressed_grad(p)
            items.append((p, compressed, ctx))
        h = None
        if items:
            pre, post = self._scales()
            h = _grouped([c for _, c, _ in items], f"group.{gi}", self._op, pre, post, in_place=True,
                         process_set=self._process_set)
        self._group_handles[gi] = (h, items)
        self._group_ready[gi] = set()

    # ---------------------------------------------------------------------- synchronization

    def synchronize(self):
        """Waits for every gradient's allreduce and writes the results into ``.grad``."""
        if self._peers == 1:
            self._synchronized = True
            return
        # Parameters whose hook did not fire this step (unused in the graph, or fewer backward
        # passes than backward_passes_per_step) are reduced now, so every rank submits them.
        for p in self._params:
            key = id(p)
            gi = self._group_of.get(key)
            if gi is None:
                if key not in self._pending:
                    self._start(p)
            elif gi not in self._group_handles:
                self._start_group(gi)
        for h, compressed, ctx, p in self._pending.values():
            self._finish(synchronize(h), compressed, ctx, p)
        for h, items in self._group_handles.values():
            if h is not None:
                synchronize(h)
            for p, compressed, ctx in items:
                self._finish(compressed, compressed, ctx, p)
        self._pending.clear()
        self._group_handles.clear()
        for p in self._params:
            self._delay[id(p)] = self.backward_passes_per_step
        self._synchronized = True

    def _finish(self, output, compressed, ctx, p):
        if ctx is _SPARSE:
            p.grad = output
            return
        result = self._compression.decompress(output, ctx)
        grad = p.grad
        if grad.is_sparse:
            # Back in the gradient's own layout, so later accumulation into it still adds up.
            p.grad = result.to_sparse(sparse_dim=grad.sparse_dim()) if result is not grad else result
        elif result is not grad:
            with torch.no_grad():
                grad.copy_(result)

    def load_state_dict(self, *args, **kwargs):
        """The wrapped optimizer's, after forgetting this step's gradient exchange (as Horovod
        does): allreduces in flight are waited for and their results dropped, and every
        parameter's backward-pass count restarts, so training resumes cleanly from the loaded
        state."""
        handles = [h for h, _c, _x, _p in self._pending.values()]
        handles += [h for h, _items in self._group_handles.values() if h is not None]
        self._pending.clear()
        self._group_handles.clear()
        self._group_ready = [set() for _ in self._groups]
        first_error = None
        for h in handles:
            try:
                synchronize(h)
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # reported once every buffer is back
                first_error = first_error or e
        for key in self._delay:
            self._delay[key] = self.backward_passes_per_step
        self._synchronized = False
        self._should_synchronize = True
        if first_error is not None:
            raise first_error
        return super().load_state_dict(*args, **kwargs)

    @contextlib.contextmanager
    def skip_synchronize(self):
        """Within this context ``step()`` does not synchronize (call ``synchronize()`` yourself)."""
        self._should_synchronize = False
        try:
            yield
        finally:
            self._should_synchronize = True

    def step(self, closure=None):
        """Synchronizes the gradients (unless skipped), then runs the wrapped optimizer's step."""
        if self._should_synchronize:
            if self._synchronized:
                warnings.warn("optimizer.step() called without optimizer.skip_synchronize() after "
                              "optimizer.synchronize(); this synchronizes twice", stacklevel=2)
            self.synchronize()
        self._synchronized = False
        return super().step(closure)

    def zero_grad(self, set_to_none=True):
        """Like the wrapped optimizer's, but refuses while allreduces are in flight."""
        if self._pending or self._group_handles:
            raise AssertionError("optimizer.zero_grad() was called after loss.backward() but before "
                                 "optimizer.step() or optimizer.synchronize()")
        return super().zero_grad(set_to_none=set_to_none)


def DistributedOptimizer(optimizer, named_parameters=None, compression=Compression.none,
                         backward_passes_per_step=1, op=Average, gradient_predivide_factor=1.0,
                         num_groups=0, groups=None, sparse_as_dense=False, process_set=None):
    """Wraps ``optimizer`` so gradients are averaged over all ranks (or the ranks of
    ``process_set``; ranks outside it keep their own gradients) before each update.

    With ``op=Adasum`` (and more than one rank to combine with) it follows Horovod's delta
    optimizer instead: each parameter takes its local step as soon as its gradient is ready, the
    change is combined over ranks with Adasum, and ``step()`` sets every parameter to its value
    before the local step plus the combined change (see ``hora.torch.adasum_optimizer``).

    The result is an instance of a subclass of the optimizer's class (isinstance still holds)
    built over the same parameter groups; its state starts empty, as in Horovod.
    """
    if num_groups and groups is None:
        groups = num_groups
    if int(backward_passes_per_step) < 1:
        raise ValueError("backward_passes_per_step must be at least 1")
    if reduce_op(None, op, "hora.torch.DistributedOptimizer") == Adasum:
        if gradient_predivide_factor != 1.0:
            raise ValueError("gradient_predivide_factor needs op=Average")
        _set_id(process_set, "hora.torch.DistributedOptimizer")
        if (process_set is None or process_set.included()) and _set_size(process_set) > 1:
            from hora.torch.adasum_optimizer import _DistributedAdasumMixin

            cls = type(optimizer.__class__.__name__, (_DistributedAdasumMixin, optimizer.__class__), {})
            return cls(optimizer.param_groups, named_parameters, compression, backward_passes_per_step,
                       process_set)
    cls = type(optimizer.__class__.__name__, (_DistributedMixin, optimizer.__class__), {})
    return cls(optimizer.param_groups, named_parameters, compression, backward_passes_per_step, op,
               gradient_predivide_factor, groups, sparse_as_dense, process_set)
