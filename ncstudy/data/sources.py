"""Labelled image sources, each returned as uint8 arrays [N, C, H, W] with integer labels.

- `digits`: scikit-learn's bundled copy of the UCI optical-recognition digits (1,797 real 8x8 images,
  10 classes, pixel values 0..16), no download. It has no official test split, so a balanced test
  set is held out first, by the data seed, before the long-tailed subset is drawn.
- `cifar10` / `cifar100`: torchvision's CIFAR (Krizhevsky 2009), downloaded when `data.download` is
  set, else read from `data.root`.
- `parquet`: image tables in the format of ../shared/data/cifar10-jpeg: `ROOT/train.parquet` and
  `ROOT/test.parquet` with an integer `label` column, an `image` column of encoded bytes (JPEG/PNG),
  and the class names in the schema metadata `classes` (comma-separated); any class count.
Decoded tables are cached by content (ncstudy.data.cache).
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncstudy.data.cache import cached_arrays
from ncstudy.errors import StudyError

PARQUET_HELP = "expected train.parquet and test.parquet with columns 'label' and 'image' (see ../shared/data/cifar10-jpeg)"


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


@dataclass(frozen=True)
class Source:
    """A balanced training pool (from which the long-tailed subset and validation are drawn) and a
    test set; or, for file lists, the ready long-tailed training list with its own val list."""

    pool: Any
    test: Any
    val: Any = None


def _labelled(images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], max_value: float) -> LabelledImages:
    return LabelledImages(images, labels.astype(np.int64), classes, max_value, np.arange(len(labels)))


def load_digits_source(test_per_class: int, seed: int) -> Source:
    """The digits pool and a balanced test set of `test_per_class` images per class, held out first."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    everything = _labelled(
        bunch.images.astype(np.uint8)[:, None, :, :], bunch.target, tuple(str(n) for n in bunch.target_names), 16.0
    )
    rng = np.random.default_rng(seed)
    test_parts = []
    for k in range(len(everything.classes)):
        members = np.flatnonzero(everything.labels == k)
        if test_per_class >= len(members):
            raise StudyError(
                f"data.test_per_class: {test_per_class} leaves no training images of digit {k} ({len(members)} in all)"
            )
        test_parts.append(np.sort(rng.permutation(members)[:test_per_class]))
    test_index = np.concatenate(test_parts)
    pool_mask = np.ones(len(everything), dtype=bool)
    pool_mask[test_index] = False
    return Source(everything.subset(np.flatnonzero(pool_mask)), everything.subset(test_index))


def _decode_images(encoded: list[bytes], where: Path) -> np.ndarray:
    """Encoded image bytes -> uint8 [N, 3, H, W]; every image must have the same size."""
    from PIL import Image

    first = None
    out = None
    for i, blob in enumerate(encoded):
        with Image.open(io.BytesIO(blob)) as image:
            array = np.asarray(image.convert("RGB"))
        if out is None:
            first = array.shape
            out = np.empty((len(encoded), 3, first[0], first[1]), dtype=np.uint8)
        elif array.shape != first:
            raise StudyError(f"{where}: image {i} is {array.shape[1]}x{array.shape[0]}, the first is {first[1]}x{first[0]}")
        out[i] = array.transpose(2, 0, 1)
    if out is None:
        raise StudyError(f"{where}: the table has no rows")
    return out


def _read_parquet_table(path: Path, cache_dir: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise StudyError(f"data.root: {path} not found; {PARQUET_HELP}")
    try:
        schema = pq.read_schema(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise StudyError(f"{path}: not a readable Parquet file ({error})") from None
    missing = [c for c in ("label", "image") if c not in schema.names]
    if missing:
        raise StudyError(f"{path}: no column {', '.join(map(repr, missing))} (has {', '.join(schema.names)}); {PARQUET_HELP}")
    metadata = schema.metadata or {}
    classes = metadata.get(b"classes")
    names = tuple(classes.decode().split(",")) if classes else None

    def decode() -> tuple[np.ndarray, np.ndarray]:
        table = pq.read_table(path, columns=["label", "image"])
        labels = table.column("label").to_numpy().astype(np.int64)
        return _decode_images(table.column("image").to_pylist(), path), labels

    images, labels = cached_arrays(path, cache_dir, decode)
    return images, labels, names


def load_parquet_source(root: str | None, cache_dir: Path) -> Source:
    if not root:
        raise StudyError(f"data.root: required for dataset 'parquet'; {PARQUET_HELP}")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise StudyError(f"data.root: {folder} is not a folder; {PARQUET_HELP}")
    train_images, train_labels, names = _read_parquet_table(folder / "train.parquet", cache_dir)
    test_images, test_labels, _ = _read_parquet_table(folder / "test.parquet", cache_dir)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    if min(train_labels.min(), test_labels.min()) < 0:
        raise StudyError(f"{folder}: labels must be 0..K-1, found a negative label")
    classes = names if names and len(names) == num_classes else tuple(str(k) for k in range(num_classes))
    return Source(_labelled(train_images, train_labels, classes, 255.0), _labelled(test_images, test_labels, classes, 255.0))


def load_cifar_source(name: str, root: str | None, download: bool) -> Source:
    """torchvision's CIFAR-10/100 (the real download path for users with internet)."""
    import torchvision

    dataset_class = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    folder = Path(root or "data").expanduser()
    created = not folder.exists()
    splits = []
    for train in (True, False):
        try:
            dataset = dataset_class(str(folder), train=train, download=download)
        except (RuntimeError, OSError) as error:  # not found / corrupted, or a download without network
            if created:
                shutil.rmtree(folder, ignore_errors=True)  # leave nothing half-written behind
            if isinstance(error, RuntimeError):
                hint = "set data.download: true (needs internet)" if not download else "the download failed"
                raise StudyError(f"data.root: {name} not found under {folder} ({error}); {hint}") from None
            raise StudyError(f"data.download: could not download {name} into {folder}: {error}") from None
        images = np.ascontiguousarray(np.asarray(dataset.data).transpose(0, 3, 1, 2))
        splits.append(_labelled(images, np.asarray(dataset.targets), tuple(dataset.classes), 255.0))
    return Source(*splits)
