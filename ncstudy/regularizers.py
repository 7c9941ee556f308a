"""The neural-collapse regularizers of Liu et al., "Inducing Neural Collapse in Deep Long-tailed
Learning" (AISTATS 2023, arXiv 2302.12453), exactly as ../shared/GUIDE.md defines them.

- `within_class_loss` (L_W, the NC1 term): (1/K) * sum over classes k present in the batch of
  mean_{i: y_i = k} ||h_i - c_k||^2. The 1/K comes from the authors' released code; the paper's
  lambda values were tuned with it.
- `between_class_loss` (L_B, the NC2 term): centre the centres, take the pairwise angles with the
  cosine clamped to [-0.99999, 0.99999], and return -(1/K) * sum_k min_{j != k} theta_kj (radians);
  with a temperature T the min is the soft-min -T * log sum_{j != k} exp(-theta_kj / T).
- `ClassCenters`: learnable centres (random init) trained by their own SGD (lr 0.5, no momentum,
  no weight decay) with the gradient scaled by 1 / lambda_W, the centre-loss trick of Wen et al.
  (ECCV 2016) that the released code uses.
"""

from __future__ import annotations

import torch
from torch import nn

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
