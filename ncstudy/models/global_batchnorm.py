"""BatchNorm with the statistics of the global batch across DDP workers, on any device.

PyTorch's `nn.SyncBatchNorm` runs only on accelerators, so multi-worker CPU trials (gloo) would
normalise each worker's shard with its own statistics and train a different model for every worker
count. `GlobalBatchNorm` computes each channel's mean and variance of the global batch instead: the
count and sum, then the sum of squared deviations from the global mean (two passes, as accurate as
one worker's BatchNorm), each summed over the workers by a differentiable all-reduce. Its backward
sums the workers' gradients of the statistics, so after DDP's average every parameter gets the
gradient of one worker holding the whole batch (the argument of ncstudy.method.regularizers,
"Global-batch semantics"; SyncBatchNorm's backward does the same). Running statistics are updated
with the global mean and unbiased variance, identically on every worker. Evaluation uses them as
BatchNorm does.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as distributed_autograd
from torch import nn


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are the global batch's over `group` (same state dict)."""

    def __init__(self, num_features: int, group: dist.ProcessGroup | None = None, **kwargs):
        super().__init__(num_features, **kwargs)
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        channels = (0, 2, 3)
        count = x.new_tensor([x.numel() / x.shape[1]])
        totals = distributed_autograd.all_reduce(torch.cat([x.sum(channels), count]), group=self.group)
        n = totals[-1].detach()
        mean = totals[:-1] / n
        centred = x - mean.view(1, -1, 1, 1)
        variance = distributed_autograd.all_reduce(centred.pow(2).sum(channels), group=self.group) / n
        self._update_running_statistics(mean.detach(), variance.detach(), n)
        normalised = centred * torch.rsqrt(variance + self.eps).view(1, -1, 1, 1)
        if self.affine:
            normalised = normalised * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return normalised

    @torch.no_grad()
    def _update_running_statistics(self, mean: torch.Tensor, variance: torch.Tensor, n: torch.Tensor) -> None:
        if not self.track_running_stats:
            return
        self.num_batches_tracked += 1
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(variance * n / (n - 1).clamp_min(1), factor)


def convert_to_global_batchnorm(module: nn.Module, group: dist.ProcessGroup | None) -> nn.Module:
    """`module` with every BatchNorm2d replaced by a GlobalBatchNorm holding the same parameters and
    buffers (as nn.SyncBatchNorm.convert_sync_batchnorm does for the accelerator version)."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(
            module.num_features, group, eps=module.eps, momentum=module.momentum, affine=module.affine,
            track_running_stats=module.track_running_stats,
        )  # fmt: skip
        converted.load_state_dict(module.state_dict())
        return converted.to(module.running_mean.device if module.running_mean is not None else "cpu")
    for name, child in module.named_children():
        module.add_module(name, convert_to_global_batchnorm(child, group))
    return module
