"""Reference implementations of the accuracy and calibration metrics, for tests only: the textbook
definitions in plain numpy loops. Trials compute these metrics once, in
ncstudy.engine.evaluation.evaluate_split (torch, summed across workers); tests/test_metrics.py checks
these definitions against hand-computed values and evaluate_split against these definitions.

- Per-class accuracy: the recall of each class, its correctly predicted samples over its samples
  (NaN for a class without samples).
- Group accuracy: the many/medium/few-shot groups of Liu et al. (CVPR 2019, OLTR) and Kang et al.
  (ICLR 2020, decoupling); a group's accuracy is the mean per-class accuracy of its classes that have
  samples, NaN for a group without any (shown as a dash, never 0). `all` is the plain sample accuracy.
- Balanced accuracy: the mean per-class recall over the classes that have samples.
- Expected calibration error: Guo et al., "On Calibration of Modern Neural Networks" (ICML 2017),
  Eq. 3, ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|, the confidence being the largest
  probability and B_m the samples whose confidence falls in the m-th of M equal-width bins
  (lower, upper] of [0, 1], M = 15 as in evaluate_split; the loop of the paper's released code
  (temperature_scaling.py, _ECELoss). NaN without samples.
- Group calibration: the ECE of the samples whose true class is in the group.
"""

from __future__ import annotations

import math

import numpy as np

GROUPS = ("many", "medium", "few")


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.array([np.mean(predictions[labels == k] == k) if np.any(labels == k) else math.nan for k in range(num_classes)])


def group_accuracy(
    predictions: np.ndarray, labels: np.ndarray, groups: dict[str, list[int]], num_classes: int
) -> dict[str, float]:
    per_class = per_class_accuracy(predictions, labels, num_classes)
    result = {"all": float(np.mean(predictions == labels)) if len(labels) else math.nan}
    for name in GROUPS:
        present = [per_class[k] for k in groups[name] if not math.isnan(per_class[k])]
        result[name] = float(np.mean(present)) if present else math.nan
    return result


def balanced_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    present = [a for a in per_class_accuracy(predictions, labels, num_classes) if not math.isnan(a)]
    return float(np.mean(present)) if present else math.nan


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    if len(labels) == 0:
        return math.nan
    confidences, predictions = probabilities.max(axis=1), probabilities.argmax(axis=1)
    correct = predictions == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lower, upper in zip(edges[:-1], edges[1:]):
        in_bin = (confidences > lower) & (confidences <= upper)
        if in_bin.any():
            ece += in_bin.sum() / len(labels) * abs(correct[in_bin].mean() - confidences[in_bin].mean())
    return float(ece)


def group_calibration(
    probabilities: np.ndarray, labels: np.ndarray, groups: dict[str, list[int]], bins: int = 15
) -> dict[str, float]:
    result = {"ece_all": expected_calibration_error(probabilities, labels, bins)}
    for name in GROUPS:
        member = np.isin(labels, groups[name])
        result[f"ece_{name}"] = expected_calibration_error(probabilities[member], labels[member], bins)
    return result
