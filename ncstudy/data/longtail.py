"""Long-tailed class counts and the index selection that builds a long-tailed training set.

`class_counts` follows the LDAM-DRW construction (Cao et al., NeurIPS 2019, `imbalance_cifar.py`,
`get_img_num_per_cls`): the exponential profile gives class i `int(n_max * (1/ratio) ** (i / (C - 1)))`
images, the step profile keeps n_max for the first C - round(mu * C) classes and int(n_max / ratio)
for the rest. Ratio 1 is the balanced set. The selection takes, per class, a seeded random subset of
the pool (the data seed is separate from the training seed, so the same long-tailed set can be
trained with many seeds) and draws validation images only from the pool images it left unused; every
class keeps `val_per_class` of them, even where that leaves it fewer training images than the
profile asks for (the head class at the benchmark's n_max: `held_out_counts`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

PROFILES = ("exp", "step")


def class_counts(
    n_max: int,
    num_classes: int,
    ratio: float,
    profile: str = "exp",
    minority_fraction: float = 0.5,
) -> list[int]:
    """Images per class, largest first, for an imbalance `ratio` = n_max / n_min (>= 1)."""
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not ratio >= 1:
        raise ValueError(f"imbalance ratio must be >= 1 (1 = balanced), got {ratio}")
    if profile == "exp":
        if num_classes == 1:
            return [int(n_max)]
        return [int(n_max * (1.0 / ratio) ** (i / (num_classes - 1))) for i in range(num_classes)]
    if profile == "step":
        if not 0.0 <= minority_fraction <= 1.0:
            raise ValueError(f"minority_fraction must be in [0, 1], got {minority_fraction}")
        n_major = num_classes - round(minority_fraction * num_classes)
        return [int(n_max)] * n_major + [int(n_max / ratio)] * (num_classes - n_major)
    raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")


@dataclass(frozen=True)
class Split:
    """Indices into one labelled pool: a long-tailed training subset and a balanced validation subset."""

    train: np.ndarray
    val: np.ndarray

    def fingerprint(self) -> str:
        """A short hash of the selected indices, logged with every trial so runs can be matched to data."""
        digest = hashlib.sha256()
        digest.update(np.sort(self.train).astype(np.int64).tobytes())
        digest.update(b"|")
        digest.update(np.sort(self.val).astype(np.int64).tobytes())
        return digest.hexdigest()[:16]


def select_long_tailed(
    labels: np.ndarray, counts: list[int], val_per_class: int, seed: int
) -> Split:
    """Pick `counts[k]` training indices of class k from a labelled pool and `val_per_class`
    validation indices from the pool images the training subset did not draw, so train and val
    never overlap and every class has validation images. A class whose pool cannot hold both (the
    head class of CIFAR-10-LT at n_max 5,000) keeps `val_per_class` images for validation and
    trains on the rest of its pool: `held_out_counts` gives the resulting training counts. Raises
    ValueError naming the class when its pool holds no more than `val_per_class` images.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for k, n_train in enumerate(held_out_counts(labels, counts, val_per_class)):
        order = rng.permutation(np.flatnonzero(labels == k))
        train_parts.append(np.sort(order[:n_train]))
        val_parts.append(np.sort(order[n_train : n_train + val_per_class]))
    return Split(train=np.concatenate(train_parts), val=np.concatenate(val_parts))


def held_out_counts(labels: np.ndarray, counts: list[int], val_per_class: int) -> list[int]:
    """The training count of each class once `val_per_class` of its pool images are kept for
    validation: `counts[k]`, or the pool minus the validation images where the pool is too small."""
    pool = np.bincount(np.asarray(labels), minlength=len(counts))
    short = [k for k in range(len(counts)) if pool[k] <= val_per_class]
    if short:
        k = short[0]
        raise ValueError(f"class {k} has {pool[k]} pool images, not more than the {val_per_class} validation images")
    return [min(int(n), int(pool[k]) - val_per_class) for k, n in enumerate(counts)]
