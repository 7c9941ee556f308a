import numpy as np
import pytest

from ncstudy.data.longtail import class_counts, select_long_tailed

CIFAR10_LT_100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_cifar10_lt_exp_profile_matches_ldam_drw():
    assert class_counts(5000, 10, 100) == CIFAR10_LT_100
    assert class_counts(5000, 10, 50) == [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100]
    assert class_counts(5000, 10, 10) == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]


@pytest.mark.parametrize("ratio, tail", [(100, 5), (50, 10), (10, 50)])
def test_cifar100_lt_ends_and_step_profiles(ratio, tail):
    counts = class_counts(500, 100, ratio)
    assert len(counts) == 100 and counts[0] == 500 and counts[-1] == tail
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    assert class_counts(500, 100, ratio, profile="step") == [500] * 50 + [tail] * 50
    assert class_counts(5000, 10, ratio, profile="step") == [5000] * 5 + [5000 // ratio] * 5


@pytest.mark.parametrize(
    "n_max, classes, ratio, total",
    [(5000, 10, 100, 12406), (5000, 10, 50, 13996), (5000, 10, 10, 20431),
     (500, 100, 100, 10847), (500, 100, 50, 12608), (500, 100, 10, 19573)],
)  # fmt: skip
def test_known_cifar_lt_totals(n_max, classes, ratio, total):
    assert sum(class_counts(n_max, classes, ratio)) == total


def test_step_profile_keeps_majority_at_n_max():
    assert class_counts(5000, 10, 10, profile="step", minority_fraction=0.5) == [5000] * 5 + [500] * 5
    assert class_counts(100, 10, 10, profile="step", minority_fraction=0.3) == [100] * 7 + [10] * 3


def test_ratio_one_is_balanced_and_below_one_is_an_error():
    assert class_counts(50, 4, 1) == [50] * 4
    with pytest.raises(ValueError, match="ratio"):
        class_counts(50, 4, 0.5)
    with pytest.raises(ValueError, match="profile"):
        class_counts(50, 4, 2, profile="linear")


def test_selection_is_exact_disjoint_and_seeded():
    labels = np.repeat(np.arange(3), 30)
    counts = [20, 10, 5]
    split = select_long_tailed(labels, counts, val_per_class=6, seed=1)
    assert np.bincount(labels[split.train], minlength=3).tolist() == counts
    assert np.bincount(labels[split.val], minlength=3).tolist() == [6, 6, 6]
    assert not set(split.train) & set(split.val)
    again = select_long_tailed(labels, counts, val_per_class=6, seed=1)
    other = select_long_tailed(labels, counts, val_per_class=6, seed=2)
    assert again.fingerprint() == split.fingerprint()
    assert other.fingerprint() != split.fingerprint()


def test_selection_keeps_validation_images_of_used_up_classes_and_refuses_a_pool_too_small():
    labels = np.repeat(np.arange(2), [10, 3])
    with pytest.raises(ValueError, match="class 1 has 3 pool images"):
        select_long_tailed(labels, [9, 2], val_per_class=3, seed=0)
    labels = np.repeat(np.arange(2), 10)
    split = select_long_tailed(labels, [9, 2], val_per_class=3, seed=0)
    assert np.bincount(labels[split.train], minlength=2).tolist() == [7, 2]  # 10 - 3 validation images
    assert np.bincount(labels[split.val], minlength=2).tolist() == [3, 3]
    assert not set(split.train) & set(split.val)
