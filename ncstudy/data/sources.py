"""Labelled image sources, each returned as uint8 arrays [N, C, H, W] with integer labels.

`digits` is scikit-learn's bundled copy of the UCI optical-recognition digits (1,797 real 8x8
images, 10 classes, pixel values 0..16), which needs no download. It has no official test split, so
a balanced test set is held out first, by the data seed, before the long-tailed subset is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ncstudy.errors import StudyError


@dataclass(frozen=True)
class LabelledImages:
    images: np.ndarray  # uint8 [N, C, H, W]
    labels: np.ndarray  # int64 [N]
    classes: tuple[str, ...]
    max_value: float  # the pixel value that maps to 1.0
    index: np.ndarray  # int64 [N]: each image's position in its source, to trace and to check overlaps

    def subset(self, positions: np.ndarray) -> "LabelledImages":
        return LabelledImages(
            self.images[positions], self.labels[positions], self.classes, self.max_value, self.index[positions]
        )

    def __len__(self) -> int:
        return len(self.labels)


def load_digits_split(test_per_class: int, seed: int) -> tuple[LabelledImages, LabelledImages]:
    """The digits pool and a balanced test set of `test_per_class` images per class, held out first."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    names = tuple(str(name) for name in bunch.target_names)
    everything = LabelledImages(images, labels, names, 16.0, np.arange(len(labels)))
    rng = np.random.default_rng(seed)
    test_parts = []
    for k in range(len(everything.classes)):
        members = np.flatnonzero(labels == k)
        if test_per_class >= len(members):
            raise StudyError(
                f"data.test_per_class: {test_per_class} leaves no training images of digit {k} ({len(members)} in all)"
            )
        test_parts.append(np.sort(rng.permutation(members)[:test_per_class]))
    test_index = np.concatenate(test_parts)
    pool_mask = np.ones(len(labels), dtype=bool)
    pool_mask[test_index] = False
    return everything.subset(np.flatnonzero(pool_mask)), everything.subset(test_index)
