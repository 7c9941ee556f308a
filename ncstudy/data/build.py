"""Assemble a study's data: source -> long-tailed training subset + validation + test, and groups.

The long-tailed subset follows the benchmark's profile (`class_counts`, n_max = the smallest class's
pool by default: 5,000 for CIFAR-10, 500 for CIFAR-100). Validation images are drawn from the pool
images the subset did not use (docs/data.md, "The long-tailed subset"), so the objective never touches the test set
and never sees a training image. Every class has `val_per_class` validation images, so the objective
sees every class: where the subset would use a class's whole pool (CIFAR-10-LT's head class at n_max
5,000), that class trains on its pool minus the validation images (4,980), a deviation from the
benchmark's exact counts that `StudyData.deviations` records and `data describe`, the trial (its
`counts_note`) and the report state. Set `data.imbalance.n_max` lower to keep the exact profile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ncstudy.config import DataConfig
from ncstudy.data.cache import default_cache_dir
from ncstudy.data.filelist import FileList, StreamingImages, read_list
from ncstudy.data.loader import TensorImages, channel_stats
from ncstudy.data.longtail import class_counts, held_out_counts, select_long_tailed
from ncstudy.data.sources import (
    LabelledImages,
    Source,
    load_cifar_source,
    load_digits_source,
    load_parquet_source,
)
from ncstudy.data.groups import frequency_groups
from ncstudy.data_root import DATA_ENV, DATA_PATH_KEYS, data_root, data_root_hint, resolved_data_paths
from ncstudy.errors import StudyError


@dataclass(frozen=True)
class StudyData:
    train: LabelledImages | FileList
    val: LabelledImages | FileList
    test: LabelledImages | FileList
    train_counts: list[int]
    groups: dict[str, list[int]]
    augment: bool
    fingerprint: str  # hash of the selected train/val indices
    profile_counts: list[int] | None = None  # the benchmark profile's counts, where they differ from train_counts

    @property
    def counts_note(self) -> str:
        """The classes whose training count is below the profile's ("" when none), e.g.
        "airplane 4980 of 5000": their validation images came out of the profile's share."""
        if self.profile_counts is None:
            return ""
        pairs = zip(self.train_counts, self.profile_counts)
        return "; ".join(f"{self.train.classes[k]} {n} of {profile}" for k, (n, profile) in enumerate(pairs) if n != profile)

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def in_channels(self) -> int:
        return 3 if isinstance(self.train, FileList) else self.train.images.shape[1]


def source_key(config: DataConfig) -> tuple:
    """What determines the source arrays: trials with equal keys can share one decoded copy."""
    if config.dataset == "digits":
        return ("digits", config.test_per_class, config.seed)
    config = resolved_paths(config)
    if config.dataset == "filelist":
        return ("filelist", config.root, config.train_list, config.val_list, config.test_list)
    return (config.dataset, config.root, config.cache_dir)


def resolved_paths(config: DataConfig) -> DataConfig:
    """`config` with its data paths absolute (ncstudy.data_root). A study loaded from a file has them
    so already (ncstudy.study_file); this covers a DataConfig built in code."""
    paths = resolved_data_paths(config.dataset, {key: getattr(config, key) for key in DATA_PATH_KEYS})
    if all(getattr(config, key) == value for key, value in paths.items()):
        return config
    return config.model_copy(update=paths)


def load_source(config: DataConfig) -> Source:
    config = resolved_paths(config)
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    if config.dataset == "digits":
        return load_digits_source(config.test_per_class, config.seed)
    if config.dataset == "filelist":
        root = Path(config.root)
        if not root.is_dir():
            raise StudyError(
                f"data.root: {root} is not a folder (the image root of the file lists; {data_root_hint()}); {_filelist_fix(config)}"
            )
        train = read_list(root, Path(config.train_list))
        num_classes = len(train.classes)
        val = read_list(root, Path(config.val_list), num_classes)
        test = read_list(root, Path(config.test_list), num_classes)
        _check_no_training_images(train, {"data.val_list": (config.val_list, val), "data.test_list": (config.test_list, test)})
        return Source(pool=train, test=test, val=val)
    if config.dataset == "parquet":
        return load_parquet_source(config.root, cache_dir)
    return load_cifar_source(config.dataset, config.root, config.download, cache_dir)


def _filelist_fix(config: DataConfig) -> str:
    """The fix for a missing image root: an absolute data.root, or, for a root under the data root,
    a data root holding the top folders of the data paths (e.g. imagenet/ and ImageNet_LT/)."""
    base, absolute = data_root(), "--set data.root=/abs/path/to/images"
    if not Path(config.root).is_relative_to(base):
        return f"fix: {absolute}"
    paths = [Path(getattr(config, key)) for key in DATA_PATH_KEYS]
    held = dict.fromkeys(f"{path.relative_to(base).parts[0]}/" for path in paths if path.is_relative_to(base) and path != base)
    return f"fix: export {DATA_ENV}=/path/to/data (the folder holding {' and '.join(held)}) or {absolute}"


def _check_no_training_images(train: FileList, lists: dict[str, tuple[str, FileList]]) -> None:
    """Validation and test lists must not hold training images (the benchmarks' lists never do;
    iNaturalist's val list doubling as the test list is the usual practice, so those two may share)."""
    training = {os.path.normpath(path) for path in train.paths}
    for key, (list_file, files) in lists.items():
        shared = [i for i, path in enumerate(files.paths) if os.path.normpath(path) in training]
        if shared:
            first = shared[0]
            raise StudyError(
                f"{key}: {list_file}:{files.index[first]}: {files.paths[first]} is a training image "
                f"({len(shared)} of its {len(files)} images are in data.train_list)"
            )


def build_data(config: DataConfig, source: Source | None = None) -> StudyData:
    """Cut the long-tailed, validation and test splits (from `source` if given, else loaded), with at
    most `eval_per_class` test images per class (validation images too, for a file list)."""
    source = source or load_source(config)
    if config.eval_per_class is not None:
        source = _capped_evaluation(source, config.eval_per_class, config.seed)
    if source.val is not None:
        return _from_lists(config, source)
    pool = source.pool
    num_classes = len(pool.classes)
    per_class_pool = np.bincount(pool.labels, minlength=num_classes)
    n_max = config.imbalance.n_max or int(per_class_pool.min())
    if n_max > per_class_pool.min():
        raise StudyError(
            f"data.imbalance.n_max: {n_max} is more than the {int(per_class_pool.min())} pool images of class "
            f"{int(per_class_pool.argmin())}"
        )
    counts = class_counts(
        n_max, num_classes, config.imbalance.ratio, config.imbalance.profile, config.imbalance.minority_fraction
    )
    if min(counts) < 1:
        raise StudyError(f"data.imbalance.ratio: {config.imbalance.ratio} leaves a class with no images at n_max {n_max}")
    try:
        trained = held_out_counts(pool.labels, counts, config.val_per_class)
    except ValueError as error:
        raise StudyError(f"data.val_per_class: {config.val_per_class}: {error}") from None
    split = select_long_tailed(pool.labels, counts, config.val_per_class, config.seed)
    augment = config.augment if config.augment is not None else pool.images.shape[1:] == (3, 32, 32)
    return StudyData(
        train=pool.subset(split.train),
        val=pool.subset(split.val),
        test=source.test,
        train_counts=trained,
        groups=frequency_groups(trained, config.shot_split),
        augment=augment,
        fingerprint=split.fingerprint(),
        profile_counts=counts if trained != counts else None,
    )


def _from_lists(config: DataConfig, source: Source) -> StudyData:
    """File lists are already the long-tailed benchmark with its own validation list (every class has
    training images: ncstudy.data.filelist.read_list checks). An `imbalance.n_max` below the list's
    largest class shrinks every class in proportion (at least one image each), the profile kept."""
    pool = source.pool
    listed = np.bincount(pool.labels, minlength=len(pool.classes))
    n_max = config.imbalance.n_max
    if n_max is not None and n_max < listed.max():
        keep = np.maximum(1, np.floor(listed * n_max / listed.max())).astype(int)
        pool = _take(pool, _per_class(pool.labels, keep, config.seed))
    counts = np.bincount(pool.labels, minlength=len(pool.classes)).tolist()
    return StudyData(
        train=pool,
        val=source.val,
        test=source.test,
        train_counts=counts,
        groups=frequency_groups(counts, config.shot_split),
        augment=True if config.augment is None else config.augment,
        fingerprint=pool.fingerprint(),
    )


def _capped_evaluation(source: Source, per_class: int, seed: int) -> Source:
    """The source with at most `per_class` test (and listed validation) images per class."""
    def capped(split):
        return None if split is None else _take(split, _per_class(split.labels, per_class, seed))

    return replace(source, test=capped(source.test), val=capped(source.val))


def _per_class(labels: np.ndarray, keep: int | np.ndarray, seed: int) -> np.ndarray:
    """Positions of at most `keep` (one number, or one per class) items of each class, drawn with a
    seeded permutation and returned in their original order."""
    order = np.random.default_rng(seed).permutation(len(labels))
    limit = np.broadcast_to(np.asarray(keep), (int(labels.max()) + 1 if len(labels) else 0,))
    taken = np.zeros_like(limit)
    chosen = []
    for position in order:
        label = labels[position]
        if taken[label] < limit[label]:
            taken[label] += 1
            chosen.append(position)
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _take(split: LabelledImages | FileList, positions: np.ndarray) -> LabelledImages | FileList:
    if isinstance(split, FileList):
        return replace(split, paths=tuple(split.paths[i] for i in positions), labels=split.labels[positions],
                       index=split.index[positions])  # fmt: skip
    return split.subset(positions)


def device_splits(data: StudyData, config: DataConfig, device) -> tuple:
    """(train, val, test) on the device: tensor-resident for image arrays, streamed for file lists."""
    if isinstance(data.train, FileList):
        return tuple(StreamingImages(s, device, config.image_size, config.loader_workers) for s in (data.train, data.val, data.test))
    mean, std = channel_stats(data.train)
    return tuple(TensorImages(s, device, mean, std) for s in (data.train, data.val, data.test))
