import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ncstudy.method.metrics import neural_collapse
from ncstudy.method.nc_stream import ClassMoments, group_collapse, nc4_mismatches

SCALAR_KEYS = ("nc1", "nc2_equinorm", "nc2_equiangle", "nc2_maxangle", "min_angle_deg", "nc3")


def _imbalanced(counts, p, seed=0, dtype=torch.float64, offset=5.0):
    """Features around random class centres (plus a common offset, as ReLU features have), shuffled."""
    generator = torch.Generator().manual_seed(seed)
    k = len(counts)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=generator)]
    centres = torch.randn(k, p, generator=generator, dtype=torch.float64) * 2 + offset
    features = centres[labels] + torch.randn(len(labels), p, generator=generator, dtype=torch.float64)
    weight = torch.randn(k, p, generator=generator, dtype=torch.float64)
    bias = torch.randn(k, generator=generator, dtype=torch.float64)
    return features.to(dtype), labels, weight, bias


def _stream(features, labels, num_classes, batch, counts=None, groups=None):
    moments = ClassMoments(num_classes, features.shape[1], counts=counts, groups=groups)
    for start in range(0, len(labels), batch):
        moments.update(features[start : start + batch], labels[start : start + batch])
    return moments


def _nc4_stream(moments, features, logits, batch):
    classes, means = moments.class_means()
    mismatches = total = 0
    for start in range(0, len(features), batch):
        m, n = nc4_mismatches(features[start : start + batch], logits[start : start + batch], means, classes)
        mismatches, total = mismatches + m, total + n
    return mismatches / total


def _assert_same(result, direct, rel=1e-9):
    for key in SCALAR_KEYS:
        if key in direct:
            assert result[key] == pytest.approx(direct[key], rel=rel, abs=1e-12), key


COUNTS = [60, 31, 17, 9, 5, 3, 2, 1, 0, 1]  # imbalanced, a class without samples, single-sample classes


@pytest.mark.parametrize("batch", [1, 7, 64, 1000])
@pytest.mark.parametrize("mode", ["counts", "per_class"])
def test_stream_equals_direct_for_any_batch_split(batch, mode):
    features, labels, weight, bias = _imbalanced(COUNTS, 12)
    counts = torch.bincount(labels, minlength=len(COUNTS)) if mode == "counts" else None
    moments = _stream(features, labels, len(COUNTS), batch, counts)
    direct = neural_collapse(features, labels, len(COUNTS), weight, bias)
    _assert_same(moments.finalize(weight), direct)
    assert set(moments.finalize(weight)) == set(direct) - {"nc4"}
    logits = features @ weight.t() + bias
    assert _nc4_stream(moments, features, logits, batch) == pytest.approx(direct["nc4"])


def test_nc1_matches_an_independent_numpy_calculation():
    features, labels, _, _ = _imbalanced(COUNTS, 12, seed=3)
    h, y = features.numpy(), labels.numpy()
    present = [c for c in range(len(COUNTS)) if COUNTS[c] > 0]
    means = {c: h[y == c].mean(0) for c in present}
    m = np.stack([means[c] for c in present])
    m = m - m.mean(0)
    s_w = sum(np.cov(h[y == c].T, bias=True) if COUNTS[c] > 1 else np.zeros((12, 12)) for c in present) / len(present)
    s_b = m.T @ m / len(present)
    expected = np.trace(s_w @ np.linalg.pinv(s_b)) / len(present)
    result = _stream(features, labels, len(COUNTS), 16, torch.bincount(labels, minlength=len(COUNTS))).finalize()
    assert result["nc1"] == pytest.approx(expected, rel=1e-8)


def test_thousand_classes():
    k, p = 1000, 64
    counts = [max(1, int(12 * 0.05 ** (i / (k - 1)))) for i in range(k)]  # 12 down to 1
    features, labels, weight, bias = _imbalanced(counts, p, seed=1)
    direct = neural_collapse(features, labels, k, weight, bias)
    per_class = _stream(features, labels, k, 1024)
    weighted = _stream(features, labels, k, 1024, torch.tensor(counts))
    _assert_same(per_class.finalize(weight), direct)
    _assert_same(weighted.finalize(weight), direct)
    logits = features @ weight.t() + bias
    assert _nc4_stream(weighted, features, logits, 1024) == pytest.approx(direct["nc4"])


def test_float32_wide_features_few_samples_are_finite_and_match_float64():
    counts = [5, 4, 3, 3, 2, 2, 2, 1, 1, 1]
    features, labels, weight, _ = _imbalanced(counts, 2048, seed=2, dtype=torch.float32)
    direct64 = neural_collapse(features.double(), labels, 10, weight)
    direct32 = neural_collapse(features, labels, 10, weight.float())
    streamed = _stream(features, labels, 10, 5, torch.tensor(counts)).finalize(weight.float())
    assert all(math.isfinite(v) for v in streamed.values())
    _assert_same(streamed, direct64, rel=1e-7)
    _assert_same(direct32, direct64, rel=1e-7)

    # independently, with numpy: pinv(S_B) = k pinv(M) pinv(M)^T for S_B = M^T M / k (no 2048 x 2048 pinv)
    h, y = features.double().numpy(), labels.numpy()
    means = np.stack([h[y == c].mean(0) for c in range(10)])
    projected = (h - means[y]) @ np.linalg.pinv(means - means.mean(0), rcond=1e-10)
    nc1 = 10 * np.sum((projected**2).sum(1) / np.array(counts)[y]) / 10 / 10
    assert streamed["nc1"] == pytest.approx(nc1, rel=1e-6)


def test_merge_equals_one_accumulator():
    features, labels, weight, _ = _imbalanced(COUNTS, 8, seed=4)
    counts = torch.bincount(labels, minlength=len(COUNTS))
    first = _stream(features[:50], labels[:50], len(COUNTS), 16, counts)
    second = _stream(features[50:], labels[50:], len(COUNTS), 16, counts)
    _assert_same(first.merge(second).finalize(weight), neural_collapse(features, labels, len(COUNTS), weight))


def test_counts_that_do_not_match_the_samples_are_refused():
    features, labels, _, _ = _imbalanced(COUNTS, 8)
    moments = _stream(features[:50], labels[:50], len(COUNTS), 16, torch.bincount(labels, minlength=len(COUNTS)))
    with pytest.raises(ValueError, match="class counts"):
        moments.finalize()


def test_per_class_moments_beyond_the_memory_limit_are_refused():
    with pytest.raises(ValueError, match="counts="):
        ClassMoments(1000, 2048)
    ClassMoments(1000, 2048, counts=[1] * 1000)  # one P x P sum: fine


def _reduce_worker(rank: int, store: str, out: str, features, labels, counts) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    moments = ClassMoments(len(counts), features.shape[1], counts=counts)
    moments.update(features[rank::2], labels[rank::2])
    result = moments.all_reduce().finalize()
    dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as handle:
        json.dump(result, handle)


def test_all_reduce_across_two_ranks_equals_direct(tmp_path):
    features, labels, _, _ = _imbalanced(COUNTS, 8, seed=5)
    counts = torch.bincount(labels, minlength=len(COUNTS))
    out = str(tmp_path / "result")
    mp.spawn(_reduce_worker, args=(str(tmp_path / "store"), out, features, labels, counts), nprocs=2)
    direct = neural_collapse(features, labels, len(COUNTS))
    for rank in range(2):
        with open(f"{out}.{rank}") as handle:
            _assert_same(json.load(handle), direct)


GROUPS = {"many": [0, 1, 2], "medium": [3, 4, 5, 6], "few": [7, 8, 9]}


def _independent_groups(features, labels, groups):
    """NC1 per group, angles and norms in numpy from their definitions."""
    h, y = features.numpy(), labels.numpy()
    present = sorted(set(y.tolist()))
    means = {c: h[y == c].mean(0) for c in present}
    centre = np.mean([means[c] for c in present], axis=0)
    m = np.stack([means[c] - centre for c in present])
    pinv_b = np.linalg.pinv(m.T @ m / len(present))
    sigma = {c: (h[y == c] - means[c]).T @ (h[y == c] - means[c]) / (y == c).sum() for c in present}
    nc1 = {}
    for name, classes in groups.items():
        members = [c for c in classes if c in means]
        nc1[name] = np.trace(sum(sigma[c] for c in members) / len(members) @ pinv_b) / len(present) if members else math.nan

    def angle(a, b):
        u, v = means[a] - centre, means[b] - centre
        return math.degrees(math.acos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1)))

    norms = {c: np.linalg.norm(means[c] - centre) for c in present}
    return nc1, angle, norms, present


@pytest.mark.parametrize("mode", ["groups", "per_class"])
def test_group_collapse_matches_definitions(mode):
    features, labels, _, _ = _imbalanced(COUNTS, 12, seed=6)
    if mode == "groups":
        moments = ClassMoments.from_features(features, labels, len(COUNTS), GROUPS)
    else:
        moments = _stream(features, labels, len(COUNTS), 32)
    result = group_collapse(moments, GROUPS)
    nc1, angle, norms, present = _independent_groups(features, labels, GROUPS)
    for name in GROUPS:
        assert result.scalars[f"nc1_{name}"] == pytest.approx(nc1[name], rel=1e-8), name
    # class 8 has no samples, so few = [7, 9]
    assert result.scalars["min_angle_few_deg"] == pytest.approx(angle(7, 9), rel=1e-8)
    assert result.scalars["min_angle_many_deg"] == pytest.approx(min(angle(0, 1), angle(0, 2), angle(1, 2)), rel=1e-8)
    many_few = min(angle(a, b) for a in (0, 1, 2) for b in (7, 9))
    assert result.scalars["min_angle_many_few_deg"] == pytest.approx(many_few, rel=1e-8)
    assert result.angles_deg.shape == (10, 10) and np.isnan(result.angles_deg[8]).all()
    assert result.angles_deg[3, 5] == pytest.approx(angle(3, 5), rel=1e-8)
    assert np.allclose(result.angles_deg[present][:, present], result.angles_deg[present][:, present].T)
    assert np.isnan(result.mean_norms[8])
    assert result.mean_norms[present] == pytest.approx([norms[c] for c in present], rel=1e-10)
    # the global NC1 is the class-weighted mean of the group values
    sizes = {"many": 3, "medium": 4, "few": 2}
    weighted = sum(sizes[g] * result.scalars[f"nc1_{g}"] for g in GROUPS) / sum(sizes.values())
    assert weighted == pytest.approx(moments.finalize()["nc1"], rel=1e-9)


def test_group_collapse_empty_and_single_class_groups_are_nan():
    features, labels, _, _ = _imbalanced(COUNTS, 12, seed=7)
    groups = {"many": [0, 1, 2, 3, 4, 5, 6], "medium": [], "few": [7, 8, 9]}
    result = group_collapse(ClassMoments.from_features(features, labels, len(COUNTS), groups), groups)
    assert math.isnan(result.scalars["nc1_medium"]) and math.isnan(result.scalars["min_angle_medium_deg"])
    single = {"many": [0, 1, 2, 3, 4, 5, 6, 8], "medium": [7], "few": [9]}  # class 8 has no samples
    result = group_collapse(ClassMoments.from_features(features, labels, len(COUNTS), single), single)
    assert math.isnan(result.scalars["min_angle_medium_deg"]) and math.isnan(result.scalars["min_angle_few_deg"])
    assert result.scalars["nc1_medium"] == pytest.approx(0.0, abs=1e-12)  # class 7 has one sample: no within-class spread
    assert math.isfinite(result.scalars["nc1_few"]) and math.isfinite(result.scalars["min_angle_many_few_deg"])


def test_group_collapse_refuses_other_groups_than_the_moments_were_summed_by():
    features, labels, _, _ = _imbalanced(COUNTS, 8)
    moments = ClassMoments.from_features(features, labels, len(COUNTS), GROUPS)
    with pytest.raises(ValueError, match="other groups"):
        group_collapse(moments, {"many": [0, 1], "medium": [2, 3, 4, 5, 6], "few": [7, 8, 9]})
    with pytest.raises(ValueError, match="overlap"):
        ClassMoments(10, 8, counts=COUNTS, groups={"many": [0, 1], "few": [1, 2]})


def test_merge_refuses_accumulators_of_another_mode():
    with pytest.raises(ValueError, match="merge"):
        ClassMoments(10, 8, counts=COUNTS).merge(ClassMoments(10, 8))
    with pytest.raises(ValueError, match="merge"):
        ClassMoments(10, 8, counts=COUNTS).merge(ClassMoments(10, 8, counts=COUNTS, groups=GROUPS))
