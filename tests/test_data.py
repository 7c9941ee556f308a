import numpy as np
import pytest

from ncstudy.config import DataConfig
from ncstudy.data.build import build_data
from ncstudy.data.longtail import class_counts
from ncstudy.data.sources import load_digits_source
from ncstudy.errors import StudyError


def test_digits_splits_are_long_tailed_balanced_and_disjoint():
    config = DataConfig(dataset="digits", imbalance={"ratio": 10, "n_max": 100}, val_per_class=20, seed=3)
    data = build_data(config)
    assert data.train_counts == class_counts(100, 10, 10)
    assert np.bincount(data.train.labels, minlength=10).tolist() == data.train_counts
    assert np.bincount(data.val.labels, minlength=10).tolist() == [20] * 10
    assert np.bincount(data.test.labels, minlength=10).tolist() == [50] * 10
    train, val, test = set(data.train.index), set(data.val.index), set(data.test.index)
    assert not train & val and not train & test and not val & test
    assert data.train.images.dtype == np.uint8 and data.train.images.shape[1:] == (1, 8, 8)


def test_data_seed_changes_the_subset_but_not_its_shape():
    first = build_data(DataConfig(imbalance={"ratio": 10}, seed=0))
    second = build_data(DataConfig(imbalance={"ratio": 10}, seed=1))
    assert first.train_counts == second.train_counts
    assert first.fingerprint != second.fingerprint
    assert build_data(DataConfig(imbalance={"ratio": 10}, seed=0)).fingerprint == first.fingerprint


def test_too_large_n_max_names_the_key():
    with pytest.raises(StudyError, match="data.imbalance.n_max"):
        build_data(DataConfig(imbalance={"ratio": 10, "n_max": 500}))


def test_default_n_max_is_the_smallest_pool_and_digits_are_not_augmented():
    config = DataConfig(imbalance={"ratio": 10})
    data = build_data(config)
    pool = load_digits_source(config.test_per_class, config.seed).pool
    per_class = np.bincount(pool.labels)
    assert (data.profile_counts or data.train_counts)[0] == per_class.min()
    assert data.train_counts[0] == min(per_class.min(), per_class[0] - config.val_per_class)
    assert data.augment is False
    assert data.groups == {"many": [0, 1, 2], "medium": [3, 4, 5, 6], "few": [7, 8, 9]}
