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
  (the released code), `ema` (centres as a running mean of batch class means, every class seen so
  far; the gradient flows as if each present class's centre were its batch mean, straight-through)
  or `batch` (the class means of the current batch; L_B over the classes present).

Global-batch semantics (docs/design.md, "Worker-count invariance"). With W DDP workers every term is
the term of the whole global batch: per-class sums and counts (and the class means of batch and EMA
centres) are summed across the workers by a differentiable all-reduce (`WorkerSum`), so every worker
computes the same loss value. Autograd's backward of that all-reduce sums the workers' gradients,
which gives each worker W times its share, and DDP's average divides the W out again: the features'
and the network's gradients are those of one worker holding the whole batch. The learnable centres
live outside DDP: their gradient (W times the share of each worker, plus the L_B term once) is
summed and divided by W in `step`, which again leaves the one-worker gradient.

Mixed (mixup) samples count for the label of the larger share (`mixup_labels: dominant`, the
released code's behaviour for mixup-trained models) or for both labels with weights lambda and
1 - lambda (`mixup_labels: both`); `SampleClasses` carries either form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as distributed_autograd
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


class WorkerSum:
    """Sums over the DDP workers of one trial, on a process group of its own (so that the all-reduce
    inside the backward pass never interleaves with DDP's gradient buckets on the default group).
    With one worker every sum is the tensor itself."""

    def __init__(self, world_size: int = 1):
        self.world_size = world_size
        self.group = dist.new_group() if world_size > 1 else None  # collective: every rank builds it

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over the workers, differentiable: the backward pass sums the gradients too."""
        if self.world_size == 1:
            return tensor
        return distributed_autograd.all_reduce(tensor, group=self.group)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the workers in place, outside autograd (gradients, counters)."""
        if self.world_size > 1:
            dist.all_reduce(tensor, group=self.group)
        return tensor


ONE_WORKER = WorkerSum(1)


@dataclass(frozen=True)
class SampleClasses:
    """Which class each feature row counts for and with what weight: one entry per (row, class)."""

    rows: torch.Tensor  # [M] indices into the batch's features
    labels: torch.Tensor  # [M]
    weights: torch.Tensor  # [M]

    @classmethod
    def hard(cls, labels: torch.Tensor) -> "SampleClasses":
        rows = torch.arange(len(labels), device=labels.device)
        return cls(rows, labels, torch.ones(len(labels), device=labels.device))

    @classmethod
    def mixed(cls, labels_a: torch.Tensor, labels_b: torch.Tensor, lam: float) -> "SampleClasses":
        """Both labels of a mixup batch, weighted lambda and 1 - lambda."""
        rows = torch.arange(len(labels_a), device=labels_a.device)
        weights = torch.cat([torch.full(rows.shape, lam), torch.full(rows.shape, 1 - lam)]).to(labels_a.device)
        return cls(torch.cat([rows, rows]), torch.cat([labels_a, labels_b]), weights)


class NeuralCollapseRegularizer(nn.Module):
    """L_W, L_B and the centre loss of one trial, with centres in the configured mode, computed over
    the global batch of `workers` (see the module docstring)."""

    def __init__(
        self, config: RegularizerConfig, num_classes: int, feature_dim: int, generator: torch.Generator,
        workers: WorkerSum = ONE_WORKER,
    ):  # fmt: skip
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.workers = workers
        self.learnable = ClassCenters(num_classes, feature_dim, generator) if config.centers == "learnable" else None
        self.register_buffer("ema", torch.zeros(num_classes, feature_dim))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        self.optimizer = self.learnable.make_optimizer(config.center_lr) if self.learnable is not None else None
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def centers(self, features: torch.Tensor, targets: SampleClasses, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(centres [K, P], mask of the classes L_B may use) for this global batch."""
        if self.learnable is not None:
            return self.learnable.centers, torch.ones(self.num_classes, dtype=torch.bool, device=features.device)
        weighted = features[targets.rows] * targets.weights.unsqueeze(1)
        local_sums = features.new_zeros(self.num_classes, features.shape[1]).index_add(0, targets.labels, weighted)
        sums = self.workers(local_sums)
        present = counts > 0
        means = sums / counts.clamp_min(torch.finfo(counts.dtype).tiny).unsqueeze(1)
        self._pending = (sums.detach(), counts)
        if self.config.centers == "batch":
            return means, present
        blended = self._blend(means, present)
        # The running mean's value, the batch means' gradient (straight-through): lambda_B and
        # lambda_W then weigh the features' gradient as they do with batch centres, instead of
        # (1 - momentum) = 10 times less, which left the ablation's "+ L_B" row inert at lambda_B 0.1.
        return means + (blended - means).detach(), present | self.seen

    def _blend(self, means: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The EMA step: m * ema + (1 - m) * batch mean for a class seen before, its batch mean the
        first time, the EMA unchanged for a class absent from the batch."""
        m = self.config.ema_momentum
        update = torch.where(self.seen.unsqueeze(1), m * self.ema + (1 - m) * means, means)
        return torch.where(present.unsqueeze(1), update, self.ema)

    def forward(self, features: torch.Tensor, targets: torch.Tensor | SampleClasses) -> dict[str, torch.Tensor]:
        """The terms of the global batch (the same values on every worker). `targets`: the labels,
        or a SampleClasses for mixed samples."""
        if not isinstance(targets, SampleClasses):
            targets = SampleClasses.hard(targets)
        weights = targets.weights.to(features.dtype)
        counts = torch.zeros(self.num_classes, dtype=features.dtype, device=features.device)
        counts = self.workers.sum_(counts.index_add(0, targets.labels, weights))
        centers, usable = self.centers(features, targets, counts)
        zero = features.new_zeros(())
        terms = {"loss_within": zero, "loss_between": zero, "loss_center": zero}
        c = self.config
        if c.lambda_within or c.lambda_center:
            squared = (features[targets.rows] - centers[targets.labels]).pow(2).sum(dim=1) * weights
            if c.lambda_within:
                per_class = self.workers(features.new_zeros(self.num_classes).index_add(0, targets.labels, squared))
                present = counts > 0
                terms["loss_within"] = (per_class[present] / counts[present]).sum() / self.num_classes
            if c.lambda_center:
                terms["loss_center"] = 0.5 * self.workers(squared.sum()) / counts.sum()
        if c.lambda_between:
            terms["loss_between"] = between_class_loss(centers[usable], c.temperature)
        return terms

    def weighted(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        return c.lambda_within * terms["loss_within"] + c.lambda_between * terms["loss_between"] + c.lambda_center * terms["loss_center"]

    def zero_grad(self) -> None:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """After backward: step learnable centres (gradient summed over the workers and divided by
        their number, then scaled by 1 / (lambda_W + lambda_center)), or fold the global batch's class
        means into the EMA (the same on every worker)."""
        if self.learnable is not None:
            grad = self.learnable.centers.grad
            if grad is None:
                return
            self.workers.sum_(grad).div_(self.workers.world_size)
            self.learnable.scale_gradient(self.config.lambda_within + self.config.lambda_center)
            self.optimizer.step()
            return
        if self.config.centers == "ema" and self._pending is not None:
            sums, counts = self._pending
            present = counts > 0
            self.ema.copy_(self._blend(sums / counts.clamp_min(torch.finfo(counts.dtype).tiny).unsqueeze(1), present))
            self.seen |= present
        self._pending = None
