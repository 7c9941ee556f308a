import math

import numpy as np
import pytest
import torch

from ncstudy.metrics import (
    balanced_accuracy,
    expected_calibration_error,
    group_accuracy,
    group_calibration,
    neural_collapse,
    shot_groups,
)


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


def _guo_ece(probabilities, labels, bins):
    """The loop of Guo et al.'s released code (temperature_scaling.py, _ECELoss)."""
    boundaries = np.linspace(0, 1, bins + 1)
    confidences, predictions = probabilities.max(1), probabilities.argmax(1)
    accuracies = predictions == labels
    ece = 0.0
    for lower, upper in zip(boundaries[:-1], boundaries[1:]):
        in_bin = (confidences > lower) & (confidences <= upper)
        if in_bin.mean() > 0:
            ece += abs(confidences[in_bin].mean() - accuracies[in_bin].mean()) * in_bin.mean()
    return ece


def test_expected_calibration_error_by_hand_and_against_the_reference_loop():
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    # bin (0.8, 0.9]: accuracy 1/2, confidence 0.9; bin (0.6, 0.7]: accuracy 1, confidence 0.7
    assert expected_calibration_error(probabilities, labels, bins=10) == pytest.approx(0.4 * 2 / 4 + 0.3 * 2 / 4)

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 7)) * 3
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 7, size=500)
    for bins in (1, 10, 15):
        assert expected_calibration_error(probabilities, labels, bins) == pytest.approx(_guo_ece(probabilities, labels, bins))
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0


def test_group_calibration_uses_the_samples_of_each_group_and_nan_when_empty():
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.ones(4), size=200)
    labels = rng.integers(0, 3, size=200)  # class 3 never occurs
    groups = {"many": [0], "medium": [], "few": [1, 2, 3]}
    result = group_calibration(probabilities, labels, groups)
    assert result["ece_all"] == pytest.approx(_guo_ece(probabilities, labels, 15))
    assert result["ece_many"] == pytest.approx(_guo_ece(probabilities[labels == 0], labels[labels == 0], 15))
    few = labels >= 1
    assert result["ece_few"] == pytest.approx(_guo_ece(probabilities[few], labels[few], 15))
    assert math.isnan(result["ece_medium"])
