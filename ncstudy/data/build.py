"""Assemble a study's data: source -> long-tailed training subset + balanced validation + test.

The validation images are drawn from the pool images that the long-tailed subset did not use
(GUIDE.md, "Outputs"), so the search objective never touches the test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ncstudy.config import DataConfig
from ncstudy.data.longtail import class_counts, select_long_tailed
from ncstudy.data.sources import LabelledImages, load_digits_split
from ncstudy.errors import StudyError


@dataclass(frozen=True)
class StudyData:
    train: LabelledImages
    val: LabelledImages
    test: LabelledImages
    train_counts: list[int]
    fingerprint: str  # hash of the selected train/val indices

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)


def build_data(config: DataConfig) -> StudyData:
    """Load the source named in the config and cut the long-tailed, validation and test splits."""
    if config.dataset == "digits":
        pool, test = load_digits_split(config.test_per_class, config.seed)
    else:  # the schema admits only the sources above
        raise StudyError(f"data.dataset: unknown source {config.dataset!r}")
    num_classes = len(pool.classes)
    per_class_pool = np.bincount(pool.labels, minlength=num_classes)
    largest_possible = int(per_class_pool.min()) - config.val_per_class
    n_max = config.imbalance.n_max or largest_possible
    if n_max > largest_possible:
        raise StudyError(
            f"data.imbalance.n_max: {n_max} plus data.val_per_class {config.val_per_class} exceeds the "
            f"{int(per_class_pool.min())} pool images of the smallest class"
        )
    if n_max < 1:
        raise StudyError(f"data.val_per_class: {config.val_per_class} leaves no training images")
    counts = class_counts(
        n_max, num_classes, config.imbalance.ratio, config.imbalance.profile, config.imbalance.minority_fraction
    )
    if min(counts) < 1:
        raise StudyError(
            f"data.imbalance.ratio: {config.imbalance.ratio} leaves a class with no images at n_max {n_max}"
        )
    split = select_long_tailed(pool.labels, counts, config.val_per_class, config.seed)
    return StudyData(
        train=pool.subset(split.train),
        val=pool.subset(split.val),
        test=test,
        train_counts=counts,
        fingerprint=split.fingerprint(),
    )
