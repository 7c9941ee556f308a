import math

import numpy as np
import pytest
import torch
from reference_metrics import (
    balanced_accuracy,
    expected_calibration_error,
    group_accuracy,
    group_calibration,
    per_class_accuracy,
)
from torch import nn

from ncstudy.data.build import StudyData
from ncstudy.data.loader import TensorImages
from ncstudy.data.sources import LabelledImages
from ncstudy.engine.evaluation import EVAL_BATCH, evaluate_split
from ncstudy.metrics import neural_collapse, shot_groups  # the documented paths (docs/design.md, "Public API")


def test_shot_group_boundaries():
    groups = shot_groups([101, 100, 20, 19, 500])
    assert groups == {"many": [0, 4], "medium": [1, 2], "few": [3]}
    assert shot_groups([50, 40], many_gt=45, few_lt=45) == {"many": [0], "medium": [], "few": [1]}


def test_group_accuracy_is_class_averaged_and_empty_group_is_nan():
    labels = np.array([0, 0, 0, 0, 1, 2])
    predictions = np.array([0, 0, 0, 1, 1, 0])
    groups = {"many": [0, 1], "medium": [], "few": [2]}
    result = group_accuracy(predictions, labels, groups, 3)
    assert result["all"] == pytest.approx(4 / 6)
    assert result["many"] == pytest.approx((0.75 + 1.0) / 2)
    assert math.isnan(result["medium"])
    assert result["few"] == 0.0


def _simplex_etf(k: int) -> torch.Tensor:
    return math.sqrt(k / (k - 1)) * (torch.eye(k) - 1.0 / k)


def test_exact_simplex_etf_is_fully_collapsed():
    k = 4
    means = _simplex_etf(k)
    counts = [5, 3, 2, 1]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    features = means[labels]
    result = neural_collapse(features, labels, k, weight=means.clone())
    for key in ("nc1", "nc2_equinorm", "nc2_maxangle", "nc3", "nc4", "nc2_equiangle"):
        assert result[key] == pytest.approx(0.0, abs=1e-9), key
    assert result["min_angle_deg"] == pytest.approx(math.degrees(math.acos(-1 / (k - 1))), abs=1e-6)


def test_metrics_match_an_independent_numpy_calculation():
    rng = np.random.default_rng(0)
    k, p = 4, 6
    counts = [40, 15, 6, 2]
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    centres = rng.normal(size=(k, p)) * 3
    features = centres[labels] + rng.normal(size=(len(labels), p))
    weight = rng.normal(size=(k, p))
    bias = rng.normal(size=k)

    means = np.stack([features[labels == c].mean(0) for c in range(k)])
    mu_c = means.mean(0)
    m = means - mu_c
    s_w = sum(
        sum(np.outer(h - means[c], h - means[c]) for h in features[labels == c]) / counts[c] for c in range(k)
    ) / k
    s_b = m.T @ m / k
    nc1 = np.trace(s_w @ np.linalg.pinv(s_b)) / k
    norms = np.linalg.norm(m, axis=1)
    cos = [m[a] @ m[b] / norms[a] / norms[b] for a in range(k) for b in range(k) if a != b]
    nc3 = np.sum((weight / np.linalg.norm(weight) - m / np.linalg.norm(m)) ** 2)
    classifier = (features @ weight.T + bias).argmax(1)
    ncc = np.argmin(((features[:, None, :] - means[None]) ** 2).sum(-1), axis=1)

    result = neural_collapse(torch.tensor(features), torch.tensor(labels), k, torch.tensor(weight), torch.tensor(bias))
    assert result["nc1"] == pytest.approx(nc1, rel=1e-6)
    assert result["nc2_equinorm"] == pytest.approx(norms.std() / norms.mean(), rel=1e-6)
    assert result["nc2_equiangle"] == pytest.approx(np.std(cos), rel=1e-6)
    assert result["nc2_maxangle"] == pytest.approx(np.mean(np.abs(np.array(cos) + 1 / (k - 1))), rel=1e-6)
    assert result["min_angle_deg"] == pytest.approx(np.degrees(np.arccos(max(cos))), rel=1e-6)
    assert result["nc3"] == pytest.approx(nc3, rel=1e-6)
    assert result["nc4"] == pytest.approx(np.mean(classifier != ncc))


def test_balanced_accuracy_is_the_mean_recall_of_present_classes():
    labels = np.array([0, 0, 0, 0, 1, 2, 2])
    predictions = np.array([0, 0, 0, 1, 1, 0, 2])
    # class 3 never occurs: it does not count
    assert balanced_accuracy(predictions, labels, 4) == pytest.approx((0.75 + 1.0 + 0.5) / 3)
    assert math.isnan(balanced_accuracy(np.array([], dtype=int), np.array([], dtype=int), 4))


def test_expected_calibration_error_by_hand():
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    # bin (0.8, 0.9]: accuracy 1/2, confidence 0.9; bin (0.6, 0.7]: accuracy 1, confidence 0.7
    assert expected_calibration_error(probabilities, labels, bins=10) == pytest.approx(0.4 * 2 / 4 + 0.3 * 2 / 4)
    # one bin: |accuracy - mean confidence| = |3/4 - 0.8|
    assert expected_calibration_error(probabilities, labels, bins=1) == pytest.approx(0.05)
    # a confidence of exactly 0.5 is in (0.4, 0.5], apart from 0.55 in (0.5, 0.6]: |1 - 0.5| / 2 + |0 - 0.55| / 2
    edge = np.array([[0.5, 0.5], [0.45, 0.55]])
    assert expected_calibration_error(edge, np.array([0, 0]), bins=10) == pytest.approx((0.5 + 0.55) / 2)
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0
    assert math.isnan(expected_calibration_error(np.zeros((0, 3)), np.array([], dtype=int)))


def test_group_calibration_uses_the_samples_of_each_group_and_nan_when_empty():
    probabilities = np.array([[0.9, 0.1, 0.0], [0.9, 0.1, 0.0], [0.3, 0.7, 0.0], [0.2, 0.2, 0.6]])
    labels = np.array([0, 1, 1, 2])
    groups = {"many": [0], "medium": [], "few": [1, 2]}
    result = group_calibration(probabilities, labels, groups, bins=10)
    assert result["ece_all"] == pytest.approx(0.4 * 2 / 4 + 0.3 / 4 + 0.4 / 4)
    assert result["ece_many"] == pytest.approx(0.1)  # one sample, correct at confidence 0.9
    # by true class: the sample of class 1 predicted as 0 (confidence 0.9, wrong) counts in few
    assert result["ece_few"] == pytest.approx((0.9 + 0.3 + 0.4) / 3)
    assert math.isnan(result["ece_medium"])


class _Lookup(nn.Module):
    """A model whose logits are fixed per sample: each image holds its sample's number (two uint8
    channels, high and low byte), which picks the row of `logits`; the features are the logits."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        number = (images[:, 0, 0, 0] * 256 + images[:, 1, 0, 0]).long()
        return self.logits[number], self.logits[number]


def test_evaluate_split_gives_the_reference_metrics():
    """evaluate_split (what trials report) against the textbook definitions on random logits: three
    eval batches, long-tailed labels with a class without samples (NaN recall, left out of its group
    and of the balanced accuracy), confidences in every bin above 1/K = 0.1, some exactly 1.0 (the
    last bin's upper edge). A different bin count, a per-bin mean without the n_bin / N weights,
    groups by predicted class, or accuracies not averaged per class all fail it."""
    rng = np.random.default_rng(0)
    n, k = 2 * EVAL_BATCH + 500, 10
    frequency = np.append(0.7 ** np.arange(k - 1), 0)  # class 9 has no samples
    labels = rng.choice(k, size=n, p=frequency / frequency.sum())
    logits = rng.normal(size=(n, k)) * rng.uniform(0.0, 6.0, size=(n, 1))
    logits[np.arange(n), labels] += rng.uniform(0.0, 4.0, size=n) * (1 - labels / k)  # head classes easier
    logits[:40, 3] += 200.0  # confidence 1.0 in float32 and float64
    logits = logits.astype(np.float32)
    number = np.arange(n)
    images = np.stack([number // 256, number % 256], axis=1).astype(np.uint8)[:, :, None, None]
    split = LabelledImages(images, labels.astype(np.int64), tuple(f"c{c}" for c in range(k)), 1.0, number)
    groups = {"many": [0, 1, 2], "medium": [3, 4, 5, 6], "few": [7, 8, 9]}
    data = StudyData(split, split, split, np.bincount(labels, minlength=k).tolist(), groups, False, "")
    device_split = TensorImages(split, torch.device("cpu"), torch.zeros(2), torch.ones(2))

    metrics = evaluate_split(_Lookup(torch.from_numpy(logits)), device_split, data, bf16=False).metrics

    shifted = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    predictions = probabilities.argmax(axis=1)
    assert (probabilities.max(axis=1) == 1.0).sum() == 40
    accuracy = group_accuracy(predictions, labels, groups, k)
    expected = {
        **{f"acc_{name}": value for name, value in accuracy.items()},
        "balanced_acc": balanced_accuracy(predictions, labels, k),
        **group_calibration(probabilities, labels, groups),
    }
    assert 0.3 < expected["acc_all"] < 0.9 and expected["ece_all"] > 0.01  # not a degenerate case
    assert expected["balanced_acc"] != pytest.approx(expected["acc_all"], abs=1e-3)
    assert math.isnan(per_class_accuracy(predictions, labels, k)[9])
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


def test_evaluate_split_counts_the_images_a_diverged_model_gives_non_finite_logits():
    """NaN or infinite logits (a diverged model) are counted, not binned out of range: the old code
    raised IndexError from the calibration bins, which hid the divergence behind a crash."""
    n, k = 12, 3
    logits = torch.randn(n, k)
    logits[2, 0], logits[5, :], logits[7, 1] = math.nan, math.nan, math.inf
    number = np.arange(n)
    images = np.stack([number // 256, number % 256], axis=1).astype(np.uint8)[:, :, None, None]
    labels = (number % k).astype(np.int64)
    split = LabelledImages(images, labels, ("a", "b", "c"), 1.0, number)
    data = StudyData(split, split, split, [4, 4, 4], {"many": [0], "medium": [1], "few": [2]}, False, "")
    device_split = TensorImages(split, torch.device("cpu"), torch.zeros(2), torch.ones(2))
    assert evaluate_split(_Lookup(logits), device_split, data, bf16=False).non_finite_samples == 3
    assert evaluate_split(_Lookup(logits.nan_to_num(0.0, 1.0, -1.0)), device_split, data, bf16=False).non_finite_samples == 0
