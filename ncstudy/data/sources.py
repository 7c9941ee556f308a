"""Labelled image sources, each returned as uint8 arrays [N, C, H, W] with integer labels.

- `digits`: scikit-learn's bundled copy of the UCI optical-recognition digits (1,797 real 8x8 images,
  10 classes, pixel values 0..16), no download. It has no official test split, so a balanced test
  set is held out first, by the data seed, before the long-tailed subset is drawn.
- `cifar10` / `cifar100`: CIFAR (Krizhevsky 2009) under `data.root` (absolute by now: the data root,
  ncstudy.data_root, resolved it), in whichever form is there: torchvision's own files
  (cifar-10-batches-py/, cifar-100-python/), or Parquet image tables (below) in the folder or in
  NAME-jpeg/ or NAME/; else torchvision downloads it into the folder when `data.download` is set.
  One study file thus works online, offline with torchvision's files, and offline with the tables.
- `parquet`: image tables (docs/data.md, "Sources"): `ROOT/train.parquet` and `ROOT/test.parquet` with an
  integer `label` column, an `image` column of encoded bytes (JPEG/PNG), and the class names in the
  schema metadata `classes` (comma-separated); any class count. The training table defines the
  classes (the metadata's, else 0..the largest label) and must hold images of each; test labels must
  index them. Labels are checked column-wise before decoding; a row that does not decode is named.
Decoded tables are cached by content (ncstudy.data.cache); a table refused here leaves no entry.
"""

from __future__ import annotations

import io
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncstudy.data.cache import cached_arrays
from ncstudy.data_root import DATA_ENV, data_root_hint
from ncstudy.errors import StudyError, excerpt

PARQUET_HELP = "expected train.parquet and test.parquet with columns 'label' (integers) and 'image' (JPEG/PNG bytes)"
IMAGE_TYPES = ("binary", "large_binary", "binary_view")  # Arrow types of an encoded-bytes column


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


def _decode_images(encoded: list[bytes | None], where: Path) -> np.ndarray:
    """Encoded image bytes -> uint8 [N, 3, H, W]; every image must decode and have the same size."""
    from PIL import Image, UnidentifiedImageError

    first = out = None
    for row, blob in enumerate(encoded):
        if blob is None:
            raise StudyError(f"{where}: row {row}: the image is missing (null)")
        try:
            with Image.open(io.BytesIO(blob)) as image:
                array = np.asarray(image.convert("RGB"))
        except UnidentifiedImageError:
            raise StudyError(f"{where}: row {row}: not an image (no format Pillow reads)") from None
        except Exception as error:  # Pillow raises many types for damaged data
            raise StudyError(f"{where}: row {row}: a damaged image ({textwrap.shorten(str(error), 80)})") from None
        if first is None:
            first = array.shape
            out = np.empty((len(encoded), 3, first[0], first[1]), dtype=np.uint8)
        elif array.shape != first:
            raise StudyError(
                f"{where}: row {row}: the image is {array.shape[1]}x{array.shape[0]}, row 0's is {first[1]}x{first[0]}; "
                "all images of a table must have one size"
            )
        out[row] = array.transpose(2, 0, 1)
    return out


def _table_schema(path: Path):
    """The Parquet schema of `path`, which must hold an integer `label` and an encoded-bytes `image` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise StudyError(f"data.root: {path} not found; {PARQUET_HELP}")
    try:
        schema = pq.read_schema(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise StudyError(f"{path}: not a readable Parquet file ({textwrap.shorten(str(error), 120)})") from None
    missing = [c for c in ("label", "image") if c not in schema.names]
    if missing:
        raise StudyError(
            f"{path}: no column {', '.join(map(repr, missing))} (has {excerpt(', '.join(schema.names))}); {PARQUET_HELP}"
        )
    label_type, image_type = schema.field("label").type, schema.field("image").type
    if not pa.types.is_integer(label_type):
        raise StudyError(f"{path}: column 'label' holds {label_type}, not integers; labels are class indices 0..K-1")
    if str(image_type) not in IMAGE_TYPES:
        raise StudyError(f"{path}: column 'image' holds {image_type}, not encoded image bytes (JPEG/PNG)")
    return schema


def _class_names(path: Path, schema) -> tuple[str, ...] | None:
    """The class names of the schema metadata `classes` (comma-separated), if there are any."""
    classes = (schema.metadata or {}).get(b"classes")
    if not classes:
        return None
    try:
        return tuple(classes.decode().split(","))
    except UnicodeDecodeError:
        raise StudyError(f"{path}: the schema metadata 'classes' is not UTF-8 text") from None


def _read_labels(path: Path) -> np.ndarray:
    """The label column as int64; rows without a label are refused by row."""
    import pyarrow.parquet as pq

    column = pq.read_table(path, columns=["label"]).column("label")
    if column.null_count:
        row = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
        raise StudyError(f"{path}: row {row}: the label is missing (null)")
    labels = column.to_numpy().astype(np.int64)
    if len(labels) == 0:
        raise StudyError(f"{path}: the table has no rows")
    return labels


def _check_labels(path: Path, labels: np.ndarray, num_classes: int | None, of: str) -> None:
    """Labels must be class indices: not negative, and below `num_classes` (from `of`) when given."""
    bad = labels < 0 if num_classes is None else (labels < 0) | (labels >= num_classes)
    if bad.any():
        row, count = int(np.argmax(bad)), int(bad.sum())
        known = "0..K-1" if num_classes is None else f"0..{num_classes - 1}, from {of}"
        rows = "1 such row" if count == 1 else f"{count} such rows"
        raise StudyError(f"{path}: row {row}: label {labels[row]} is not a class index ({known}); {rows}")


def _training_classes(path: Path, labels: np.ndarray, names: tuple[str, ...] | None) -> tuple[str, ...]:
    """The classes a training table defines: the metadata's names, else 0..the largest label; two or
    more, each with images (a class without any would get none in the long-tailed subset either)."""
    _check_labels(path, labels, len(names) if names else None, "the metadata 'classes'")
    present = np.unique(labels)
    count = len(names) if names else int(present[-1]) + 1
    if count < 2:
        raise StudyError(f"{path}: only one class ({excerpt(names[0] if names else '0')}); a classifier needs at least 2")
    if len(present) != count:
        gaps = np.flatnonzero(present != np.arange(len(present)))
        absent = int(gaps[0]) if len(gaps) else len(present)
        name = f" ({excerpt(names[absent])})" if names else f" (the largest label is {present[-1]})"
        raise StudyError(f"{path}: class {absent}{name} has no images; labels are 0..K-1 and every class needs training images")
    return names or tuple(str(k) for k in range(count))


def _read_parquet_table(
    path: Path, cache_dir: Path, classes: tuple[str, ...] | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(images, labels, classes) of one table. `classes` None reads a training table: its classes are
    the metadata's, else 0..max label, and each must have images; else the labels must index `classes`.
    The labels are checked before anything is decoded, so a bad table leaves no cache entry."""
    import pyarrow.parquet as pq

    schema = _table_schema(path)
    names = _class_names(path, schema)
    labels = _read_labels(path)
    if classes is None:
        classes = _training_classes(path, labels, names)
    else:
        if names and names != classes:
            raise StudyError(f"{path}: the metadata 'classes' ({excerpt(','.join(names))}) differ from train.parquet's")
        _check_labels(path, labels, len(classes), "train.parquet")

    def decode() -> tuple[np.ndarray, np.ndarray]:
        images = pq.read_table(path, columns=["image"]).column("image").to_pylist()
        return _decode_images(images, path), labels

    images, labels = cached_arrays(path, cache_dir, decode)
    return images, labels, classes


def load_parquet_source(root: str | None, cache_dir: Path) -> Source:
    if not root:
        raise StudyError(f"data.root: required for dataset 'parquet'; {PARQUET_HELP}")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise StudyError(f"data.root: {folder} is not a folder; {PARQUET_HELP}")
    train_images, train_labels, classes = _read_parquet_table(folder / "train.parquet", cache_dir)
    test_images, test_labels, _ = _read_parquet_table(folder / "test.parquet", cache_dir, classes)
    return Source(_labelled(train_images, train_labels, classes, 255.0), _labelled(test_images, test_labels, classes, 255.0))


CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}  # torchvision's own format
CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}


@dataclass(frozen=True)
class CifarLocation:
    """Where a CIFAR data set will be read from: `kind` parquet (a folder of train/test.parquet),
    torchvision (a folder holding cifar-10-batches-py/ or cifar-100-python/), or download (into `folder`)."""

    kind: str
    folder: Path


def _cifar_places(name: str, base: Path) -> tuple[list[Path], list[Path]]:
    """The folders `locate_cifar` searches under `base`, in order: for torchvision's folder, for Parquet tables."""
    return [base, base / name], [base, base / f"{name}-jpeg", base / name]


def _not_found(name: str, base: Path) -> str:
    """What `locate_cifar` searched under `base` and did not find, and how the data root was chosen."""
    torchvision_places, parquet_places = _cifar_places(name, base)
    tables = ", ".join(str(f) for f in parquet_places)
    pickles = ", ".join(str(f / CIFAR_FOLDERS[name]) for f in torchvision_places)
    return f"no train.parquet + test.parquet in {tables}, no {pickles} ({data_root_hint()})"


def locate_cifar(name: str, root: str, download: bool) -> CifarLocation:
    """Find CIFAR-10/100 under `root` without reading it: torchvision's folder (the original pixels)
    in ROOT or ROOT/NAME, else Parquet tables in ROOT, ROOT/NAME-jpeg or ROOT/NAME; else a download
    into ROOT when `download` is set; else a StudyError naming every folder searched and the fix."""
    base = Path(root).expanduser()
    tv_folder = CIFAR_FOLDERS[name]
    torchvision_places, parquet_places = _cifar_places(name, base)
    for folder in torchvision_places:
        if (folder / tv_folder).is_dir():
            return CifarLocation("torchvision", folder)
    for folder in parquet_places:
        if (folder / "train.parquet").is_file() and (folder / "test.parquet").is_file():
            return CifarLocation("parquet", folder)
    if download:
        return CifarLocation("download", base)
    raise StudyError(
        f"data.root: {name} not found: {_not_found(name, base)}; "
        f"fix: export {DATA_ENV}=/path/to/data (the folder holding them) or --set data.download=true (needs internet)"
    )


def load_cifar_source(name: str, root: str, download: bool, cache_dir: Path) -> Source:
    """CIFAR-10/100 from wherever `locate_cifar` finds it: Parquet tables (checked to hold the data
    set's class count), torchvision's files, or torchvision's download (the path for users with internet)."""
    where = locate_cifar(name, root, download)
    if where.kind != "parquet":
        return _torchvision_cifar(name, where.folder, download=where.kind == "download")
    source = load_parquet_source(str(where.folder), cache_dir)
    if len(source.pool.classes) != CIFAR_CLASSES[name]:
        raise StudyError(
            f"{where.folder / 'train.parquet'}: {len(source.pool.classes)} classes, but {name} has {CIFAR_CLASSES[name]}; "
            f"data.root points at another data set's tables"
        )
    return source


def _torchvision_cifar(name: str, folder: Path, download: bool) -> Source:
    """torchvision's CIFAR-10/100 in `folder` (downloaded there first when `download`)."""
    import torchvision

    dataset_class = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    created = not folder.exists()
    splits = []
    for train in (True, False):
        try:
            dataset = dataset_class(str(folder), train=train, download=download)
        except (RuntimeError, OSError) as error:  # not found / corrupted, or a download without network
            if created:
                shutil.rmtree(folder, ignore_errors=True)  # leave nothing half-written behind
            if isinstance(error, RuntimeError) and not download:
                raise StudyError(f"data.root: {name} in {folder} is unreadable ({error})") from None
            raise StudyError(  # `folder` is the root locate_cifar searched
                f"data.download: could not download {name} into {folder} ({textwrap.shorten(str(error), 120)}), "
                f"and it is not there: {_not_found(name, folder)}; fix: export {DATA_ENV}=/path/to/data (the folder "
                f"holding {CIFAR_FOLDERS[name]}/ or {name}-jpeg/{{train,test}}.parquet), or connect to the internet"
            ) from None
        images = np.ascontiguousarray(np.asarray(dataset.data).transpose(0, 3, 1, 2))
        splits.append(_labelled(images, np.asarray(dataset.targets), tuple(dataset.classes), 255.0))
    return Source(*splits)
