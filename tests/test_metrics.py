import math

import numpy as np
import pytest
import torch

from ncstudy.metrics import group_accuracy, neural_collapse, shot_groups


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
