"""Classification heads on the penultimate features h: linear, cosine, and a fixed simplex ETF.

Every head exposes `weight` ([K, P]) and `bias` (a tensor or None), which the training code reads
for the neural-collapse metrics.

- `LinearHead`: plain `nn.Linear`.
- `CosineHead`: logits = s * cos(h, w_k), the normalized classifier of LDAM-DRW (Cao et al.,
  NeurIPS 2019, `NormedLinear` in models/resnet_cifar.py, same uniform-then-normalize init) with a
  fixed scale s.
- `ETFHead`: the fixed simplex equiangular tight frame classifier of Yang et al., "Inducing Neural
  Collapse in Imbalanced Learning: Do We Really Need a Learnable Classifier at the End of Deep
  Neural Network?" (NeurIPS 2022): W = sqrt(K/(K-1)) * U (I_K - 1/K 11^T) with U a random P x K
  matrix with orthonormal columns. Since (I_K - 1/K 11^T) = B B^T for B a K x (K-1) orthonormal
  basis of the sum-zero subspace, U (I_K - 1/K 11^T) = (U B) B^T, and U B is a random P x (K-1)
  matrix with orthonormal columns; we draw that matrix directly, which gives the same frame and
  needs only P >= K-1 (the released code asks for P >= K). Logits are cosines, as the
  dot-regression loss of that paper expects.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

ETF_SEED = 0


class LinearHead(nn.Linear):
    """logits = h W^T + b, with weight [K, P] and bias [K]."""

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__(feature_dim, num_classes)


class CosineHead(nn.Module):
    """logits = scale * normalize(h) normalize(W)^T; weight [K, P] learnable, no bias."""

    def __init__(self, feature_dim: int, num_classes: int, scale: float = 16.0):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"cosine head: scale must be > 0, got {scale}")
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(num_classes, feature_dim))
        self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """LDAM-DRW's NormedLinear init (uniform in [-1, 1]); cRT calls it to re-initialize the head."""
        with torch.no_grad():
            self.weight.uniform_(-1, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).t()


def simplex_etf(feature_dim: int, num_classes: int, seed: int = ETF_SEED) -> torch.Tensor:
    """A [K, P] simplex ETF: unit rows with pairwise cosine -1/(K-1), randomly (but seeded) rotated."""
    if num_classes < 2:
        raise ValueError(f"ETF head: needs at least 2 classes, got num_classes={num_classes}")
    if feature_dim < num_classes - 1:
        raise ValueError(
            f"ETF head: feature_dim={feature_dim} must be >= num_classes - 1 = {num_classes - 1}"
        )
    generator = torch.Generator().manual_seed(seed)
    random = torch.randn(feature_dim, num_classes - 1, generator=generator, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(random)  # P x (K-1), orthonormal columns
    centring = torch.eye(num_classes, dtype=torch.float64) - 1.0 / num_classes
    sum_zero_basis, _ = torch.linalg.qr(centring[:, : num_classes - 1])  # K x (K-1)
    weight = math.sqrt(num_classes / (num_classes - 1)) * sum_zero_basis @ rotation.t()
    return weight.to(torch.get_default_dtype())


class ETFHead(nn.Module):
    """logits = normalize(h) W^T with W a fixed simplex ETF (a buffer, not a parameter); no bias."""

    def __init__(self, feature_dim: int, num_classes: int, seed: int = ETF_SEED):
        super().__init__()
        self.register_buffer("weight", simplex_etf(feature_dim, num_classes, seed))
        self.bias = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=1) @ self.weight.t()


HEAD_KINDS = ("linear", "cosine", "etf")


def build_head(kind: str, feature_dim: int, num_classes: int, scale: float = 16.0) -> nn.Module:
    """The head named `kind` ("linear", "cosine" or "etf"); `scale` is used by the cosine head only."""
    if kind == "linear":
        return LinearHead(feature_dim, num_classes)
    if kind == "cosine":
        return CosineHead(feature_dim, num_classes, scale)
    if kind == "etf":
        return ETFHead(feature_dim, num_classes)
    raise ValueError(f"unknown head {kind!r}; expected one of {', '.join(HEAD_KINDS)}")
