"""Evaluation of one split, sharded across Ray Train workers and reduced, so every worker reports
the same numbers and no worker holds another's features.

Per split: accuracy overall, per class and per frequency group (a group's accuracy is the mean of its
classes'), balanced accuracy, the cross-entropy, and the expected calibration error (Guo et al.,
ICML 2017; 15 equal-width confidence bins) overall and per group, all from counts summed across
workers. With `collapse`, the neural-collapse metrics of the split's features (Papyan, Han & Donoho,
PNAS 2020) from streamed class moments (ncstudy.method.nc_stream): NC1-NC4, per-group NC1 and smallest
angles, and the per-class norms and angle matrix behind the paper's Figures 2 and 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ncstudy.data.build import StudyData
from ncstudy.data.groups import GROUPS
from ncstudy.data.loader import DeviceSplit
from ncstudy.engine.recipe import autocast
from ncstudy.method.metrics import nc4_mismatches
from ncstudy.method.nc_stream import ClassMoments, GroupCollapse, group_collapse
from ncstudy.models.heads import CosineHead

ECE_BINS = 15
# Images per evaluation batch. 256, not more: on the CPU a 1,024-image batch's first-stage
# activations (64 MiB each for a CIFAR ResNet) are above glibc's largest mmap threshold, so every one
# is a fresh mmap, page-faulted in and returned; at 256 (16 MiB) they reuse the heap the training
# step freed. Measured on 2 cores (ResNet-32, CIFAR-10-LT r=100, n_max 500, 5 epochs, the last with
# the NC measurement and test set): peak RSS 1,808 -> 1,458 MiB and the measuring epoch 40 -> 23 s;
# 128 was no smaller (1,479 MiB) and slower (27 s). Logits do not depend on it (eval mode).
EVAL_BATCH = 256


@dataclass
class SplitEvaluation:
    metrics: dict[str, float]
    per_class_accuracy: np.ndarray
    collapse: GroupCollapse | None = None
    non_finite_samples: int = 0  # images whose logits hold a NaN or an infinity (a diverged model)


def _reduce(*tensors: torch.Tensor) -> None:
    if dist.is_available() and dist.is_initialized():
        for tensor in tensors:
            dist.all_reduce(tensor)


def classifier_weight(model: nn.Module) -> torch.Tensor:
    """The classifier rows NC3 compares with the class means (unit rows for a cosine head)."""
    head = model.classifier
    return F.normalize(head.weight.detach(), dim=1) if isinstance(head, CosineHead) else head.weight.detach()


def _calibration_bins(probabilities: torch.Tensor, labels: torch.Tensor, group_of: torch.Tensor) -> torch.Tensor:
    """[groups + 1, bins, 3]: per bin the samples, the summed confidence and the correct ones; the
    last row is all samples."""
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).double()
    confidence = confidence.nan_to_num(0.0)  # a diverged model's rows (counted apart) land in bin 0, not out of range
    bins = (confidence.double() * ECE_BINS).ceil().clamp(1, ECE_BINS).long() - 1  # (lower, upper] bins
    stats = torch.zeros(len(GROUPS) + 1, ECE_BINS, 3, dtype=torch.float64, device=labels.device)
    for row, member in enumerate([group_of[labels] == g for g in range(len(GROUPS))] + [torch.ones_like(labels, dtype=torch.bool)]):
        b = bins[member]
        stats[row, :, 0].index_add_(0, b, torch.ones_like(b, dtype=torch.float64))
        stats[row, :, 1].index_add_(0, b, confidence[member].double())
        stats[row, :, 2].index_add_(0, b, correct[member])
    return stats


def _ece(stats: torch.Tensor) -> float:
    n = stats[:, 0].sum()
    return float((stats[:, 2] - stats[:, 1]).abs().sum() / n) if n > 0 else math.nan


def evaluate_split(
    model: nn.Module, split: DeviceSplit, data: StudyData, bf16: bool, rank: int = 0, world_size: int = 1,
    collapse: bool = False,
) -> SplitEvaluation:  # fmt: skip
    """Metrics of one split (keys without a prefix: acc_all, acc_many, ..., loss, balanced_acc,
    ece_all, ece_many, ...; with `collapse`: nc1, ..., nc4, nc1_many, ..., min_angle_many_few_deg)."""
    k = data.num_classes
    device = split.labels.device
    group_of = torch.full((k,), -1, dtype=torch.long, device=device)
    for g, name in enumerate(GROUPS):
        group_of[data.groups[name]] = g
    correct = torch.zeros(k, dtype=torch.float64, device=device)
    total = torch.zeros(k, dtype=torch.float64, device=device)
    loss_sum = torch.zeros(1, dtype=torch.float64, device=device)
    non_finite = torch.zeros(1, dtype=torch.float64, device=device)
    calibration = torch.zeros(len(GROUPS) + 1, ECE_BINS, 3, dtype=torch.float64, device=device)
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    model.eval()
    with torch.no_grad():
        for images, labels in split.eval_batches(EVAL_BATCH, rank, world_size):
            with autocast(bf16, device):
                logits, features = model(images)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
            non_finite += (~torch.isfinite(logits)).any(dim=1).sum().double()
            hits = (logits.argmax(dim=1) == labels).double()
            correct.index_add_(0, labels, hits)
            total.index_add_(0, labels, torch.ones_like(hits))
            calibration += _calibration_bins(logits.softmax(dim=1), labels, group_of)
            if collapse:
                kept.append((features.float(), labels, logits))
    _reduce(correct, total, loss_sum, calibration, non_finite)

    per_class = (correct / total).cpu().numpy()  # NaN for classes without samples
    metrics = {"acc_all": float(correct.sum() / total.sum()), "loss": float(loss_sum / total.sum())}
    for name in GROUPS:
        values = per_class[data.groups[name]] if data.groups[name] else np.array([])
        values = values[~np.isnan(values)]
        metrics[f"acc_{name}"] = float(values.mean()) if len(values) else math.nan
    present = per_class[~np.isnan(per_class)]
    metrics["balanced_acc"] = float(present.mean()) if len(present) else math.nan
    metrics["ece_all"] = _ece(calibration[-1])
    for g, name in enumerate(GROUPS):
        metrics[f"ece_{name}"] = _ece(calibration[g])
    result = SplitEvaluation(metrics, per_class, non_finite_samples=int(non_finite.item()))
    if collapse:
        result.collapse = _collapse(model, kept, split, data, metrics)
    return result


def _collapse(model: nn.Module, kept, split: DeviceSplit, data: StudyData, metrics: dict[str, float]) -> GroupCollapse:
    """NC metrics from this worker's kept features, reduced across workers (moments, then NC4)."""
    k = data.num_classes
    device = split.labels.device
    feature_dim = kept[0][0].shape[1] if kept else model.feature_dim
    counts = torch.bincount(split.labels.cpu(), minlength=k)
    moments = ClassMoments(k, feature_dim, counts, data.groups, device)
    for features, labels, _ in kept:
        moments.update(features, labels)
    moments.all_reduce()
    metrics.update(moments.finalize(classifier_weight(model)))
    classes, means = moments.class_means()
    mismatch = torch.zeros(2, dtype=torch.float64, device=device)
    for features, _, logits in kept:
        wrong, n = nc4_mismatches(features, logits, means, classes)
        mismatch += torch.tensor([wrong, n], dtype=torch.float64, device=device)
    _reduce(mismatch)
    metrics["nc4"] = float(mismatch[0] / mismatch[1]) if mismatch[1] > 0 else math.nan
    geometry = group_collapse(moments, data.groups)
    metrics.update(geometry.scalars)
    return geometry


def prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}{key}": value for key, value in metrics.items()}
