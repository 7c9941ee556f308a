"""The neural-collapse regularizers of Liu et al., "Inducing Neural Collapse in Deep Long-tailed
Learning" (AISTATS 2023, arXiv 2302.12453), exactly as docs/design.md defines them.

- `within_class_loss` (L_W, the NC1 term): (1/K) * sum over classes k present in the batch of
  mean_{i: y_i = k} ||h_i - c_k||^2. The 1/K comes from the authors' released code; the paper's
  lambda values were tuned with it.
- `between_class_loss` (L_B, the NC2 term): centre the centres, take the pairwise angles with the
  cosine clamped to [-0.99999, 0.99999], and return -(1/K) * sum_k min_{j != k} theta_kj (radians);
  with a temperature T the min is the soft-min -T * log sum_{j != k} exp(-theta_kj / T).
- `ClassCenters`: learnable centres (random init) trained by their own SGD (lr 0.5, no momentum,
  no weight decay) with the gradient scaled by 1 / lambda_W, the centre-loss trick of Wen et al.
  (ECCV 2016) that the released code uses.
- `center_loss`: the centre loss of Wen et al. (ECCV 2016), 0.5 * mean_i ||h_i - c_{y_i}||^2, the
  ablation baseline of the paper's Table 7 (per sample, so head classes dominate, unlike L_W).
- `NeuralCollapseRegularizer`: all terms of one trial with the centre mode of the config: `learnable`
  (the released code), `ema` (centres as a running mean of batch class means; the gradient flows
  through the current batch's share) or `batch` (the class means of the current batch; L_B over the
  classes present). Learnable centres live outside the DDP module, so their gradient is averaged
  across workers here; EMA centres are updated with the batch means of all workers so every worker
  keeps the same centres.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ncstudy.config import RegularizerConfig

COS_CLAMP = 0.99999


def within_class_loss(features: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """L_W: per-class mean squared distance to the class centre, summed over present classes, / K."""
    num_classes = centers.shape[0]
    squared_distance = (features - centers[labels]).pow(2).sum(dim=1)
    per_class_sum = torch.zeros(num_classes, dtype=squared_distance.dtype, device=features.device)
    per_class_sum = per_class_sum.index_add(0, labels, squared_distance)
    per_class_count = torch.bincount(labels, minlength=num_classes).to(squared_distance.dtype)
    present = per_class_count > 0
    return (per_class_sum[present] / per_class_count[present]).sum() / num_classes


def between_class_loss(centers: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
    """L_B: minus the mean over classes of the (soft-)minimum angle to any other centred centre."""
    num_classes = centers.shape[0]
    if num_classes < 2:
        return centers.sum() * 0.0
    centred = centers - centers.mean(dim=0, keepdim=True)
    unit = nn.functional.normalize(centred, dim=1)
    cosine = (unit @ unit.t()).clamp(-COS_CLAMP, COS_CLAMP)
    angle = torch.arccos(cosine)
    off_diagonal = ~torch.eye(num_classes, dtype=torch.bool, device=centers.device)
    if temperature is None:
        nearest = angle.masked_fill(~off_diagonal, float("inf")).min(dim=1).values
    else:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 or None, got {temperature}")
        scaled = (-angle / temperature).masked_fill(~off_diagonal, float("-inf"))
        nearest = -temperature * torch.logsumexp(scaled, dim=1)
    return -nearest.mean()


class ClassCenters(nn.Module):
    """Learnable class centres c_k (K x P) with their own optimizer, as in the released code."""

    def __init__(self, num_classes: int, feature_dim: int, generator: torch.Generator | None = None):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feature_dim, generator=generator))

    def make_optimizer(self, lr: float = 0.5) -> torch.optim.Optimizer:
        """Plain SGD: no momentum, no weight decay (the centre-loss recipe)."""
        return torch.optim.SGD([self.centers], lr=lr, momentum=0.0, weight_decay=0.0)

    def scale_gradient(self, lambda_within: float) -> None:
        """Divide the centres' gradient by lambda_W so their step does not shrink with the weight."""
        if self.centers.grad is not None and lambda_within > 0:
            self.centers.grad.div_(lambda_within)


def center_loss(features: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Wen et al. (ECCV 2016): 0.5 * mean over samples of ||h_i - c_{y_i}||^2."""
    return 0.5 * (features - centers[labels]).pow(2).sum(dim=1).mean()


def batch_class_sums(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class feature sums [K, P] (differentiable) and counts [K] of one batch."""
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, device=features.device)
    sums = sums.index_add(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).to(features.dtype)
    return sums, counts


class NeuralCollapseRegularizer(nn.Module):
    """L_W, L_B and the centre loss of one trial, with centres in the configured mode."""

    def __init__(self, config: RegularizerConfig, num_classes: int, feature_dim: int, generator: torch.Generator):
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.learnable = ClassCenters(num_classes, feature_dim, generator) if config.centers == "learnable" else None
        self.register_buffer("ema", torch.zeros(num_classes, feature_dim))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        self.optimizer = self.learnable.make_optimizer(config.center_lr) if self.learnable is not None else None
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def centers(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(centres [K, P], mask of the classes L_B may use) for this batch."""
        if self.learnable is not None:
            return self.learnable.centers, torch.ones(self.num_classes, dtype=torch.bool, device=features.device)
        sums, counts = batch_class_sums(features, labels, self.num_classes)
        present = counts > 0
        means = sums / counts.clamp_min(1).unsqueeze(1)
        self._pending = (sums.detach(), counts)
        if self.config.centers == "batch":
            return means, present
        m = self.config.ema_momentum
        blended = torch.where(self.seen.unsqueeze(1), m * self.ema + (1 - m) * means, means)
        return torch.where(present.unsqueeze(1), blended, self.ema), present | self.seen

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        centers, usable = self.centers(features, labels)
        zero = features.new_zeros(())
        return {
            "loss_within": within_class_loss(features, labels, centers) if self.config.lambda_within else zero,
            "loss_between": between_class_loss(centers[usable], self.config.temperature) if self.config.lambda_between else zero,
            "loss_center": center_loss(features, labels, centers) if self.config.lambda_center else zero,
        }

    def weighted(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        return c.lambda_within * terms["loss_within"] + c.lambda_between * terms["loss_between"] + c.lambda_center * terms["loss_center"]

    def zero_grad(self) -> None:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)

    def step(self, world_size: int) -> None:
        """After backward: step learnable centres (gradient averaged across workers, scaled by
        1 / (lambda_W + lambda_center)), or fold all workers' batch means into the EMA."""
        if self.learnable is not None:
            grad = self.learnable.centers.grad
            if grad is None:
                return
            if world_size > 1:
                dist.all_reduce(grad)
                grad.div_(world_size)
            self.learnable.scale_gradient(self.config.lambda_within + self.config.lambda_center)
            self.optimizer.step()
            return
        if self.config.centers == "ema" and self._pending is not None:
            sums, counts = self._pending
            if world_size > 1:
                dist.all_reduce(sums)
                dist.all_reduce(counts)
            present = counts > 0
            means = sums / counts.clamp_min(1).unsqueeze(1)
            m = self.config.ema_momentum
            update = torch.where(self.seen.unsqueeze(1), m * self.ema + (1 - m) * means, means)
            self.ema.copy_(torch.where(present.unsqueeze(1), update, self.ema))
            self.seen |= present
        self._pending = None

