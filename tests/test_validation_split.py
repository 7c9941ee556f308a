"""Every class has validation images, so the objective sees every class: where the long-tailed subset
would use a class's whole pool (CIFAR-10-LT's head class at n_max 5,000), that class trains on its
pool minus the validation images, and the deviation from the profile is stated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ncstudy.config import DataConfig, load_study, with_params
from ncstudy.data.build import build_data
from ncstudy.data.describe import describe_text
from ncstudy.data.longtail import class_counts, held_out_counts, select_long_tailed
from ncstudy.data.sources import load_digits_source
from ncstudy.errors import StudyError


def test_a_used_up_pool_keeps_its_validation_images():
    labels = np.repeat([0, 1, 2], [100, 100, 100])
    split = select_long_tailed(labels, [100, 50, 10], val_per_class=5, seed=0)
    assert np.bincount(labels[split.train]).tolist() == [95, 50, 10]
    assert np.bincount(labels[split.val]).tolist() == [5, 5, 5]
    assert not set(split.train) & set(split.val)


def test_classes_with_spare_images_keep_the_exact_profile_and_split():
    """Only a class whose pool is short changes: the others draw exactly as before."""
    labels = np.repeat(np.arange(10), 5000)
    counts = class_counts(500, 10, 100)
    split = select_long_tailed(labels, counts, val_per_class=20, seed=0)
    assert np.bincount(labels[split.train]).tolist() == counts
    assert held_out_counts(labels, class_counts(5000, 10, 100), 20) == [4980, *class_counts(5000, 10, 100)[1:]]


def test_a_pool_no_larger_than_the_validation_share_is_refused():
    with pytest.raises(ValueError, match="class 1 has 5 pool images"):
        held_out_counts(np.repeat([0, 1], [50, 5]), [40, 4], val_per_class=5)


def test_the_benchmark_n_max_gives_every_class_validation_images_and_says_so():
    config = DataConfig(dataset="digits", imbalance={"ratio": 10, "n_max": None}, val_per_class=20)
    data = build_data(config)
    val = np.bincount(data.val.labels, minlength=data.num_classes)
    assert (val == 20).all()
    pool = np.bincount(load_digits_source(config.test_per_class, config.seed).pool.labels)
    profile = class_counts(int(pool.min()), 10, 10)
    assert data.train_counts == [min(n, p - 20) for n, p in zip(profile, pool)] != profile
    assert data.profile_counts == profile and data.counts_note.startswith("0 ")
    text = describe_text(data, config)
    assert "so that every class keeps 20 validation images" in text and data.counts_note in text


def test_too_many_validation_images_is_one_clear_error():
    with pytest.raises(StudyError, match="data.val_per_class"):
        build_data(DataConfig(dataset="digits", imbalance={"ratio": 10, "n_max": 50}, val_per_class=200))


STUDIES = Path(__file__).resolve().parents[1] / "studies"
CIFAR100_POOL = np.repeat(np.arange(100), 500)  # CIFAR-100's training set: 500 images per class


def _data_settings(study) -> list:
    """The study's data config under every stratum value and variant that changes the data."""
    configs = [study]
    for key, values in study.search.strata.items():
        configs += [with_params(study, {key: value}) for value in values]
    configs += [with_params(study, {"variant": name}) for name in study.search.variants]
    return [c.data for c in configs]


@pytest.mark.parametrize("file", sorted(p.name for p in STUDIES.glob("*.yaml")))
def test_every_class_of_every_shipped_study_has_validation_images(file, request):
    study = load_study(STUDIES / file)
    if study.data.dataset == "filelist":
        pytest.skip("ImageNet-LT brings its own validation list (20 images of every class)")
    for config in _data_settings(study):
        if config.dataset == "cifar100":  # not on this machine: its pool, 500 images per class, is known
            counts = class_counts(500, 100, config.imbalance.ratio, config.imbalance.profile)
            val = select_long_tailed(CIFAR100_POOL, counts, config.val_per_class, config.seed).val
            per_class = np.bincount(CIFAR100_POOL[val], minlength=100)
        else:
            if config.dataset == "cifar10":
                config = config.model_copy(update={"cache_dir": str(request.getfixturevalue("cifar_parquet")[1])})
            data = build_data(config)
            per_class = np.bincount(data.val.labels, minlength=data.num_classes)
        assert (per_class == config.val_per_class).all(), f"{file}: {per_class.tolist()}"
