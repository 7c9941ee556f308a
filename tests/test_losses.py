"""Each loss against a hand calculation (math on lists, independent of ncstudy.method.losses)."""

import math

import pytest
import torch

from ncstudy.method.losses import (
    LOSS_NAMES,
    WEIGHTED_LOSSES,
    BalancedSoftmaxLoss,
    CrossEntropy,
    DotRegressionLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    build_loss,
    class_balanced_weights,
    drw_weights,
)

COUNTS = [100, 10, 1]
LOGITS = [[0.5, -0.2, 0.1], [0.3, 0.2, 0.4], [-0.6, 0.9, 0.0]]
LABELS = [0, 2, 1]


def ce_row(row, y):
    """-log softmax(row)[y]."""
    return math.log(sum(math.exp(z) for z in row)) - row[y]


def weighted_mean_ce(rows, labels, weight=None):
    """PyTorch's weighted mean: sum_i w_{y_i} ce_i / sum_i w_{y_i}."""
    w = [1.0] * len(rows[0]) if weight is None else weight
    total = sum(w[y] * ce_row(row, y) for row, y in zip(rows, labels))
    return total / sum(w[y] for y in labels)


def as_tensors(rows=LOGITS, labels=LABELS):
    return torch.tensor(rows, dtype=torch.float64), torch.tensor(labels)


def test_cross_entropy_by_hand():
    logits, labels = as_tensors()
    assert CrossEntropy()(logits, labels).item() == pytest.approx(weighted_mean_ce(LOGITS, LABELS), rel=1e-12)


def test_weight_attribute_is_honoured_and_replaceable():
    logits, labels = as_tensors()
    weight = [0.2, 1.0, 3.0]
    loss = CrossEntropy(torch.tensor(weight))
    expected = weighted_mean_ce(LOGITS, LABELS, weight)
    assert expected != pytest.approx(weighted_mean_ce(LOGITS, LABELS))  # the weights matter here
    assert loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # DRW: replace the weight on an existing loss; a float32 weight is used with float64 logits
    loss.weight = None
    assert loss(logits, labels).item() == pytest.approx(weighted_mean_ce(LOGITS, LABELS), rel=1e-12)
    loss.weight = torch.tensor([1.0, 2.0, 0.5])
    assert loss(logits, labels).item() == pytest.approx(weighted_mean_ce(LOGITS, LABELS, [1.0, 2.0, 0.5]), rel=1e-6)
    assert "weight" in dict(loss.named_buffers())  # so .to(device) moves it


def test_focal_gamma_zero_equals_ce():
    logits, labels = as_tensors()
    assert FocalLoss(gamma=0.0)(logits, labels).item() == pytest.approx(weighted_mean_ce(LOGITS, LABELS), rel=1e-12)


def test_focal_by_hand():
    logits, labels = as_tensors()
    gamma = 2.0
    terms = []
    for row, y in zip(LOGITS, LABELS):
        ce = ce_row(row, y)
        p = math.exp(row[y]) / sum(math.exp(z) for z in row)
        terms.append((1 - p) ** gamma * ce)
    assert FocalLoss(gamma=gamma)(logits, labels).item() == pytest.approx(sum(terms) / 3, rel=1e-12)


def test_focal_weighted_as_ldam_drw():
    # LDAM-DRW: ce_i is the weighted per-sample CE, p_i = exp(-ce_i), plain mean over the batch
    logits, labels = as_tensors()
    weight, gamma = [0.5, 2.0, 1.5], 1.0
    terms = []
    for row, y in zip(LOGITS, LABELS):
        ce = weight[y] * ce_row(row, y)
        terms.append((1 - math.exp(-ce)) ** gamma * ce)
    loss = FocalLoss(gamma=gamma, weight=torch.tensor(weight))
    assert loss(logits, labels).item() == pytest.approx(sum(terms) / 3, rel=1e-6)


def test_ldam_margins_for_counts_100_10_1():
    loss = LDAMLoss(COUNTS, max_margin=0.5)
    # m_j = C / n_j^(1/4) with max m = 0.5 (the rarest class, n = 1): C = 0.5
    expected = [0.5 / 100**0.25, 0.5 / 10**0.25, 0.5]
    assert loss.margins.tolist() == pytest.approx(expected, rel=1e-6)
    assert loss.margins.tolist() == pytest.approx([0.158114, 0.281171, 0.5], abs=1e-6)


def test_ldam_loss_by_hand():
    logits, labels = as_tensors()
    margins, s = [0.5 / 100**0.25, 0.5 / 10**0.25, 0.5], 30.0
    rows = []
    for row, y in zip(LOGITS, LABELS):
        shifted = [z - margins[y] if k == y else z for k, z in enumerate(row)]
        rows.append([s * z for z in shifted])
    loss = LDAMLoss(COUNTS, max_margin=0.5, scale=s)
    assert loss(logits, labels).item() == pytest.approx(weighted_mean_ce(rows, LABELS), rel=1e-6)
    weight = [0.1, 1.0, 2.0]
    loss.weight = torch.tensor(weight)
    assert loss(logits, labels).item() == pytest.approx(weighted_mean_ce(rows, LABELS, weight), rel=1e-6)
    # the logits themselves are left alone
    assert logits.tolist() == LOGITS


def test_logit_adjusted_equals_ce_on_logits_plus_tau_log_prior():
    logits, labels = as_tensors()
    total = sum(COUNTS)
    for tau in (1.0, 0.5):
        rows = [[z + tau * math.log(n / total) for z, n in zip(row, COUNTS)] for row in LOGITS]
        loss = LogitAdjustedLoss(COUNTS, tau=tau)
        assert loss(logits, labels).item() == pytest.approx(weighted_mean_ce(rows, LABELS), rel=1e-6)


def test_balanced_softmax_equals_ce_on_logits_plus_log_counts():
    logits, labels = as_tensors()
    rows = [[z + math.log(n) for z, n in zip(row, COUNTS)] for row in LOGITS]
    expected = weighted_mean_ce(rows, LABELS)
    assert expected != pytest.approx(weighted_mean_ce(LOGITS, LABELS))
    assert BalancedSoftmaxLoss(COUNTS)(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def simplex_etf(num_classes):
    """Rows: unit vectors with pairwise cosine -1/(K-1), in R^K."""
    k = num_classes
    scale = math.sqrt(k / (k - 1))
    return [[scale * ((1.0 if i == j else 0.0) - 1.0 / k) for j in range(k)] for i in range(k)]


def test_dot_regression_zero_on_perfect_alignment():
    etf = torch.tensor(simplex_etf(3), dtype=torch.float64)
    assert etf.norm(dim=1).tolist() == pytest.approx([1.0, 1.0, 1.0])
    labels = torch.tensor([2, 0, 1])
    features = 5.0 * etf[labels]  # any length: the head normalizes the features
    cosines = torch.nn.functional.normalize(features, dim=1) @ etf.t()
    assert DotRegressionLoss()(cosines, labels).item() == pytest.approx(0.0, abs=1e-12)


def test_dot_regression_by_hand():
    logits, labels = as_tensors()
    cos_true = [row[y] for row, y in zip(LOGITS, LABELS)]  # 0.5, 0.4, 0.9
    expected = 0.5 * sum((c - 1) ** 2 for c in cos_true) / 3
    assert DotRegressionLoss()(logits, labels).item() == pytest.approx(expected, rel=1e-12)


def test_class_balanced_weights_by_hand():
    beta = 0.99
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    expected = [w / sum(raw) * 3 for w in raw]
    weights = class_balanced_weights(COUNTS, beta)
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    assert weights.sum().item() == pytest.approx(3.0, rel=1e-6)
    assert weights[0] < weights[1] < weights[2]


def test_class_balanced_weights_default_beta_sum_to_k():
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    weights = class_balanced_weights(counts)
    raw = [(1 - 0.9999) / (1 - 0.9999**n) for n in counts]
    assert weights.tolist() == pytest.approx([w / sum(raw) * 10 for w in raw], rel=1e-5)
    assert weights.sum().item() == pytest.approx(10.0, rel=1e-6)


def test_drw_weights_switch_on_at_drw_epoch():
    assert drw_weights(COUNTS, epoch=0, drw_epoch=160) is None
    assert drw_weights(COUNTS, epoch=159, drw_epoch=160) is None
    expected = class_balanced_weights(COUNTS).tolist()
    assert drw_weights(COUNTS, epoch=160, drw_epoch=160).tolist() == pytest.approx(expected)
    assert drw_weights(COUNTS, epoch=199, drw_epoch=160).tolist() == pytest.approx(expected)
    assert drw_weights(COUNTS, epoch=10_000, drw_epoch=None) is None


def test_build_loss_names_and_options():
    logits, labels = as_tensors()
    expected_types = {
        "ce": CrossEntropy,
        "focal": FocalLoss,
        "ldam": LDAMLoss,
        "logit_adjusted": LogitAdjustedLoss,
        "balanced_softmax": BalancedSoftmaxLoss,
        "dot_regression": DotRegressionLoss,
    }
    for name, cls in expected_types.items():
        loss = build_loss(name, COUNTS)
        assert type(loss) is cls
        assert torch.isfinite(loss(logits, labels))
    weight = [0.2, 1.0, 3.0]
    ce = build_loss("ce", COUNTS, weight=torch.tensor(weight))
    assert ce(logits, labels).item() == pytest.approx(weighted_mean_ce(LOGITS, LABELS, weight), rel=1e-6)
    assert build_loss("focal", COUNTS, focal_gamma=2.0).gamma == 2.0
    ldam = build_loss("ldam", COUNTS, ldam_max_margin=0.3, ldam_scale=10.0)
    assert (ldam.margins.max().item(), ldam.scale) == (pytest.approx(0.3), 10.0)
    assert build_loss("logit_adjusted", COUNTS, tau=0.5).tau == 0.5


def test_build_loss_rejects_unknown_name_and_misplaced_weight():
    with pytest.raises(ValueError, match="nonsense"):
        build_loss("nonsense", COUNTS)
    with pytest.raises(ValueError, match="balanced_softmax"):
        build_loss("balanced_softmax", COUNTS, weight=torch.ones(3))


def test_counts_must_be_positive():
    with pytest.raises(ValueError, match="at least one"):
        LDAMLoss([10, 0, 1])


def test_buffers_follow_to():
    loss = LDAMLoss(COUNTS, weight=torch.ones(3)).to(torch.float64)
    assert loss.margins.dtype == torch.float64 and loss.weight.dtype == torch.float64
    for module in (LogitAdjustedLoss(COUNTS), BalancedSoftmaxLoss(COUNTS)):
        assert all(b.dtype == torch.float64 for b in module.to(torch.float64).buffers())


TERMS_CASES = [(name, False) for name in LOSS_NAMES] + [(name, True) for name in WEIGHTED_LOSSES]


@pytest.mark.parametrize("name, weighted", TERMS_CASES)
def test_terms_give_the_loss_as_their_weighted_mean(name, weighted):
    """`terms` (what DDP workers sum, docs/design.md "Worker-count invariance") agree with `forward`."""
    weight = class_balanced_weights(COUNTS, 0.99) if weighted else None
    loss = build_loss(name, COUNTS, weight=weight)
    logits, labels = torch.tensor(LOGITS), torch.tensor(LABELS)
    values, counts = loss.terms(logits, labels)
    assert values.shape == counts.shape == labels.shape
    if weighted and name != "focal":  # focal weights its ce inside; its mean stays plain
        torch.testing.assert_close(counts, weight[labels])
    torch.testing.assert_close(values.sum() / counts.sum(), loss(logits, labels))
