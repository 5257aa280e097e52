"""SyncBatchNorm: batch normalization with statistics over the global batch (all ranks)."""

import itertools

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from hora.common.basics import size
from hora.torch.mpi_ops import Sum, allreduce

_layer_ids = itertools.count()


class SyncBatchNorm(_BatchNorm):
    """Drop-in for ``torch.nn.BatchNormNd`` whose training statistics (mean, variance) are
    computed over every rank's batch. Gradients flow through the statistics' allreduce.

    In eval mode, or with one rank, it behaves exactly like ``BatchNorm``.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self._hora_id = next(_layer_ids)

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input):
        if not self.training or size() == 1:
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0] + list(range(2, input.dim()))
        count = torch.tensor([input.numel() / input.shape[1]], dtype=input.dtype)
        stats = torch.cat([input.sum(dims), (input * input).sum(dims), count])
        stats = allreduce(stats, op=Sum)
        c = self.num_features
        total = stats[2 * c]
        mean = stats[:c] / total
        var = stats[c : 2 * c] / total - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum
                if momentum is None:  # cumulative moving average
                    momentum = 1.0 / float(self.num_batches_tracked)
                n = float(total)
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        shape = [1, c] + [1] * (input.dim() - 2)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out
