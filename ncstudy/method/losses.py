"""Base (supervised) losses for long-tailed classification, each as its paper and reference code define it.

- `CrossEntropy`: plain cross-entropy with optional per-class weights (what DRW re-weights).
- `FocalLoss`: Lin et al. (ICCV 2017) as implemented in LDAM-DRW's losses.py (Cao et al., NeurIPS
  2019, github.com/kaidic/LDAM-DRW): per-sample (weighted) CE, then mean of (1 - p)^gamma * ce with
  p = exp(-ce).
- `LDAMLoss`: Cao et al. (NeurIPS 2019): margins m_j proportional to n_j^(-1/4), scaled so that
  max_j m_j = max_margin; m_y is subtracted from the true-class logit, the logits are multiplied by
  the scale s, then (weighted) CE - exactly LDAM-DRW's losses.py.
- `LogitAdjustedLoss`: Menon et al. (ICLR 2021): CE on logits + tau * log(prior), prior_j = n_j / sum n.
- `BalancedSoftmaxLoss`: Ren et al. (NeurIPS 2020): CE on logits + log(n_j).
- `DotRegressionLoss`: Yang et al. (NeurIPS 2022), the loss for a fixed ETF classifier with
  E_W = E_H = 1: 0.5 * mean_i (w_{y_i} . h_hat_i - 1)^2.
- `class_balanced_weights`: Cui et al. (CVPR 2019) effective-number weights (1 - beta) / (1 - beta^n_j),
  normalized to sum to K as LDAM-DRW's train script does; `drw_weights` switches them on at the
  deferred re-weighting epoch (Cao et al. 2019).

Every loss maps (logits [B, K], labels [B] long) to a scalar, a mean sum_i v_i / sum_i c_i over the
batch; `terms` gives its per-sample numerators v_i and denominators c_i (w_{y_i} for weighted CE, else
1), so that DDP workers can divide by the whole global batch's denominator and a trial's base loss
does not depend on how many workers share its batch (ncstudy.engine.step.supervised_loss;
docs/design.md, "Worker-count invariance"). `forward` keeps PyTorch's fused reduction, which one
worker uses: it agrees with the terms to rounding, and single-worker results stay bit-identical to
earlier versions'. Class-count constants (margins, log
priors) and class weights are non-persistent buffers: `.to(device)` moves them, and checkpoints do not
carry them (the losses are rebuilt from the config and the epoch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LOSS_NAMES = ("ce", "focal", "ldam", "logit_adjusted", "balanced_softmax", "dot_regression")
WEIGHTED_LOSSES = ("ce", "focal", "ldam", "logit_adjusted")  # the losses that take class weights (CB, DRW)


def _counts_tensor(class_counts: Sequence[int]) -> torch.Tensor:
    """The class counts as float64, after checking that every class has at least one sample."""
    counts = torch.as_tensor(list(class_counts), dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() == 0:
        raise ValueError("class_counts must be a non-empty list of per-class training counts")
    if (counts <= 0).any():
        raise ValueError(f"every class needs at least one training sample, got class_counts={list(class_counts)}")
    return counts


def _weight_on(weight: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
    """The class weights on the logits' device and dtype (None stays None)."""
    return None if weight is None else weight.to(device=logits.device, dtype=logits.dtype)


def _unweighted(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A plain mean's terms: every sample counts once."""
    return values, torch.ones_like(values)


class _WeightedLoss(nn.Module):
    """Holds `self.weight` (per-class weights or None) as a buffer that callers may replace."""

    def __init__(self, weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight), persistent=False)

    def weighted_ce_terms(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """PyTorch's weighted cross-entropy's terms: w_{y_i} ce_i and w_{y_i} (ce_i and 1 unweighted)."""
        if self.weight is None:
            return _unweighted(F.cross_entropy(logits, labels, reduction="none"))
        weight = _weight_on(self.weight, logits)
        return F.cross_entropy(logits, labels, weight=weight, reduction="none"), weight[labels]


class CrossEntropy(_WeightedLoss):
    """Cross-entropy; with `weight`, the weighted mean sum_i w_{y_i} ce_i / sum_i w_{y_i} (PyTorch's)."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, weight=_weight_on(self.weight, logits))

    def terms(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weighted_ce_terms(logits, labels)


class FocalLoss(_WeightedLoss):
    """Focal loss as LDAM-DRW implements it: ce_i (weighted by w_{y_i}), p_i = exp(-ce_i),
    mean_i (1 - p_i)^gamma * ce_i. With weights, p_i is taken from the weighted ce, as in that code."""

    def __init__(self, gamma: float = 1.0, weight: torch.Tensor | None = None):
        super().__init__(weight)
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.focal(logits, labels).mean()

    def terms(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _unweighted(self.focal(logits, labels))

    def focal(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce, _ = self.weighted_ce_terms(logits, labels)
        p = torch.exp(-ce)
        return (1 - p) ** self.gamma * ce


class LDAMLoss(_WeightedLoss):
    """LDAM: CE(s * (z - m_y e_y)) with m_j = max_margin * n_j^(-1/4) / max_k n_k^(-1/4).

    The reference code pairs it with a normalized-linear (cosine) head, whose logits lie in [-1, 1];
    scale s = 30 is tuned for such logits."""

    def __init__(
        self,
        class_counts: Sequence[int],
        max_margin: float = 0.5,
        scale: float = 30.0,
        weight: torch.Tensor | None = None,
    ):
        super().__init__(weight)
        if scale <= 0:
            raise ValueError(f"LDAM scale must be > 0, got {scale}")
        margins = _counts_tensor(class_counts) ** -0.25
        margins = margins * (max_margin / margins.max())
        self.register_buffer("margins", margins.float(), persistent=False)
        self.scale = scale

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.margin_logits(logits, labels), labels, weight=_weight_on(self.weight, logits))

    def terms(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weighted_ce_terms(self.margin_logits(logits, labels), labels)

    def margin_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """s * (z - m_y e_y)."""
        true_margin = self.margins.to(logits.dtype)[labels].unsqueeze(1)
        shift = torch.zeros_like(logits).scatter(1, labels.unsqueeze(1), true_margin)
        return self.scale * (logits - shift)


class LogitAdjustedLoss(_WeightedLoss):
    """Logit-adjusted loss: CE(z + tau * log prior), prior_j = n_j / sum_k n_k."""

    def __init__(self, class_counts: Sequence[int], tau: float = 1.0, weight: torch.Tensor | None = None):
        super().__init__(weight)
        counts = _counts_tensor(class_counts)
        self.register_buffer("log_prior", torch.log(counts / counts.sum()).float(), persistent=False)
        self.tau = tau

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.adjusted(logits), labels, weight=_weight_on(self.weight, logits))

    def terms(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weighted_ce_terms(self.adjusted(logits), labels)

    def adjusted(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + self.tau * self.log_prior.to(logits.dtype)


class BalancedSoftmaxLoss(nn.Module):
    """Balanced Softmax: CE(z + log n). No class weights (it already corrects for the label prior)."""

    def __init__(self, class_counts: Sequence[int]):
        super().__init__()
        self.register_buffer("log_counts", torch.log(_counts_tensor(class_counts)).float(), persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + self.log_counts.to(logits.dtype), labels)

    def terms(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _unweighted(F.cross_entropy(logits + self.log_counts.to(logits.dtype), labels, reduction="none"))


class DotRegressionLoss(nn.Module):
    """Dot-regression loss for a fixed ETF classifier: 0.5 * mean_i (cos_{y_i} - 1)^2.

    `logits` must already be the cosines w_k . h_hat_i of an ETF head (unit-norm fixed prototypes
    w_k, L2-normalized features h_hat_i); only the true-class column logits[i, y_i] is used. This is
    Yang et al.'s reg_dot_loss with E_W = E_H = 1."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.terms(logits, labels)[0].mean()

    def terms(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos_true = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
        return _unweighted(0.5 * (cos_true - 1).pow(2))


def class_balanced_weights(class_counts: Sequence[int], beta: float = 0.9999) -> torch.Tensor:
    """Effective-number weights w_j = (1 - beta) / (1 - beta^n_j), scaled so that sum_j w_j = K."""
    if not 0 <= beta < 1:
        raise ValueError(f"class-balanced beta must be in [0, 1), got {beta}")
    counts = _counts_tensor(class_counts)
    weights = (1 - beta) / (1 - beta**counts)
    return (weights / weights.sum() * counts.numel()).float()


def drw_weights(
    class_counts: Sequence[int], epoch: int, drw_epoch: int | None, beta: float = 0.9999
) -> torch.Tensor | None:
    """Deferred re-weighting: no weights before `drw_epoch` (None = never), class-balanced from it on."""
    if drw_epoch is None or epoch < drw_epoch:
        return None
    return class_balanced_weights(class_counts, beta)


def build_loss(
    name: str,
    class_counts: list[int],
    *,
    weight: torch.Tensor | None = None,
    focal_gamma: float = 1.0,
    ldam_max_margin: float = 0.5,
    ldam_scale: float = 30.0,
    tau: float = 1.0,
) -> nn.Module:
    """The base loss called `name` (one of LOSS_NAMES), built from the training class counts.

    The class-balanced loss of Cui et al. ("cb") is "ce" or "focal" with
    `weight=class_balanced_weights(class_counts)` from epoch 0; DRW is the same weight set on
    `loss.weight` at the DRW epoch (see `drw_weights`). Only the WEIGHTED_LOSSES take a weight."""
    if name not in LOSS_NAMES:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSS_NAMES)}")
    if weight is not None and name not in WEIGHTED_LOSSES:
        raise ValueError(f"loss {name!r} takes no class weights; weighted losses: {', '.join(WEIGHTED_LOSSES)}")
    if name == "ce":
        return CrossEntropy(weight)
    if name == "focal":
        return FocalLoss(focal_gamma, weight)
    if name == "ldam":
        return LDAMLoss(class_counts, ldam_max_margin, ldam_scale, weight)
    if name == "logit_adjusted":
        return LogitAdjustedLoss(class_counts, tau, weight)
    if name == "balanced_softmax":
        return BalancedSoftmaxLoss(class_counts)
    return DotRegressionLoss()
