"""Long-tail accuracy by frequency group and the neural-collapse metrics.

Groups follow the many/medium/few-shot split of Liu et al. (CVPR 2019, OLTR) and Kang et al.
(ICLR 2020, decoupling): many-shot classes have more than 100 training images, few-shot fewer than
20, medium the rest. A group's accuracy is the mean of its classes' accuracies; an empty group is
NaN (shown as a dash), never 0.

`neural_collapse` implements NC1-NC4 of Papyan, Han & Donoho (PNAS 2020) as ../shared/GUIDE.md
defines them: class-balanced within-class covariance, the centre mu_C taken as the plain mean of the
class means, population standard deviations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

GROUPS = ("many", "medium", "few")


def shot_groups(train_counts: Sequence[int], many_gt: int = 100, few_lt: int = 20) -> dict[str, list[int]]:
    """Class indices per group: many if n > many_gt, few if n < few_lt, medium otherwise."""
    groups: dict[str, list[int]] = {name: [] for name in GROUPS}
    for k, n in enumerate(train_counts):
        if n > many_gt:
            groups["many"].append(k)
        elif n < few_lt:
            groups["few"].append(k)
        else:
            groups["medium"].append(k)
    return groups


def index_range_groups(num_classes: int, boundaries: tuple[int, int] = (3, 7)) -> dict[str, list[int]]:
    """Classes [0, a) many, [a, b) medium, [b, K) few: for data sets ordered by frequency, such as
    CIFAR-10-LT, where thresholds 100/20 would give 8/2/0."""
    a, b = min(boundaries[0], num_classes), min(boundaries[1], num_classes)
    return {"many": list(range(a)), "medium": list(range(a, b)), "few": list(range(b, num_classes))}


def quantile_groups(train_counts: Sequence[int], quantiles: tuple[float, float] = (1 / 3, 2 / 3)) -> dict[str, list[int]]:
    """Rank classes by training count (ties by index): the first q1 share many, up to q2 medium, the rest few."""
    k = len(train_counts)
    ranked = sorted(range(k), key=lambda c: (-train_counts[c], c))
    a, b = round(quantiles[0] * k), round(quantiles[1] * k)
    return {"many": sorted(ranked[:a]), "medium": sorted(ranked[a:b]), "few": sorted(ranked[b:])}


def frequency_groups(train_counts: Sequence[int], split) -> dict[str, list[int]]:
    """Groups by the rule of a `ShotSplitConfig` (rule None: index_ranges for 10 classes, else threshold)."""
    rule = split.rule or ("index_ranges" if len(train_counts) == 10 else "threshold")
    if rule == "index_ranges":
        return index_range_groups(len(train_counts), split.boundaries)
    if rule == "quantile":
        return quantile_groups(train_counts, split.quantiles)
    return shot_groups(train_counts, split.many_gt, split.few_lt)


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Accuracy of each class (NaN for a class absent from `labels`)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    correct = np.bincount(labels, weights=(predictions == labels).astype(float), minlength=num_classes)
    total = np.bincount(labels, minlength=num_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / np.maximum(total, 1), np.nan)


def group_accuracy(
    predictions: np.ndarray, labels: np.ndarray, groups: dict[str, list[int]], num_classes: int
) -> dict[str, float]:
    """`all` (plain sample accuracy) and the mean per-class accuracy of each group (NaN if empty)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    per_class = per_class_accuracy(predictions, labels, num_classes)
    result = {"all": float((predictions == labels).mean()) if len(labels) else math.nan}
    for name in GROUPS:
        values = per_class[groups[name]] if groups[name] else np.array([])
        values = values[~np.isnan(values)]
        result[name] = float(values.mean()) if len(values) else math.nan
    return result


def neural_collapse(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> dict[str, float]:
    """NC1, NC2 (equinorm, equiangle, max-angle), the smallest angle, and with a classifier NC3, NC4.

    Computed in float64 over the classes that have samples. Keys: nc1, nc2_equinorm, nc2_equiangle,
    nc2_maxangle, min_angle_deg, and nc3, nc4 when `weight` (K x P) is given.
    """
    h = features.detach().to(torch.float64)
    y = labels.detach().to(torch.long)
    counts = torch.bincount(y, minlength=num_classes)
    present = torch.nonzero(counts > 0).flatten()
    k = len(present)
    sums = torch.zeros(num_classes, h.shape[1], dtype=torch.float64).index_add(0, y, h)
    means = sums[present] / counts[present].unsqueeze(1)
    centre = means.mean(dim=0)
    centred_means = means - centre

    position = torch.full((num_classes,), -1, dtype=torch.long)
    position[present] = torch.arange(k)
    deviation = h - means[position[y]]
    sample_weight = 1.0 / counts[y].to(torch.float64)
    within = (deviation * sample_weight.unsqueeze(1)).t() @ deviation / k
    between = centred_means.t() @ centred_means / k
    result = {"nc1": float(torch.trace(within @ torch.linalg.pinv(between)) / k)}

    norms = centred_means.norm(dim=1)
    result["nc2_equinorm"] = float(norms.std(unbiased=False) / norms.mean())
    unit = centred_means / norms.unsqueeze(1)
    cosine = unit @ unit.t()
    off_diagonal = ~torch.eye(k, dtype=torch.bool)
    pair_cosines = cosine[off_diagonal]
    if k > 1:
        result["nc2_equiangle"] = float(pair_cosines.std(unbiased=False))
        result["nc2_maxangle"] = float((pair_cosines + 1.0 / (k - 1)).abs().mean())
        result["min_angle_deg"] = float(torch.rad2deg(torch.arccos(pair_cosines.clamp(-1, 1).max())))
    else:
        result.update(nc2_equiangle=math.nan, nc2_maxangle=math.nan, min_angle_deg=math.nan)

    if weight is not None:
        w = weight.detach().to(torch.float64)[present]
        result["nc3"] = float((w / w.norm() - centred_means / centred_means.norm()).pow(2).sum())
        logits = h @ weight.detach().to(torch.float64).t()
        if bias is not None:
            logits = logits + bias.detach().to(torch.float64)
        nearest_mean = present[torch.cdist(h, means).argmin(dim=1)]
        result["nc4"] = float((logits.argmax(dim=1) != nearest_mean).to(torch.float64).mean())
    return result
