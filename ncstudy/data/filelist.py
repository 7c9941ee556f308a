"""File-list data sets (ImageNet-LT, iNaturalist 2018, Places-LT): the standard "relative/path label"
text files of Liu et al. (CVPR 2019, OLTR) plus an image root, streamed from disk.

The lists already are the long-tailed benchmark (ImageNet-LT_train.txt: 115,846 images of 1,000
classes, 1,280 to 5 per class) with their own validation and test lists, so no profile is applied.
Images stream through a torch DataLoader with worker processes (decoding 224 px images cannot be held
in memory); training uses RandomResizedCrop(224) + flip, evaluation Resize(256) + CenterCrop(224), the
recipe of the decoupling code (Kang et al., ICLR 2020). `StreamingImages` offers the interface of
ncstudy.data.loader.TensorImages, so the training loop does not know which one it has.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ncstudy.data.loader import shard_batches
from ncstudy.errors import StudyError, excerpt

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LIST_HELP = 'each line "relative/path.jpg LABEL" (the ImageNet-LT / Places-LT / iNaturalist format)'
LABEL = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class FileList:
    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray  # int64 [N]
    classes: tuple[str, ...]
    index: np.ndarray  # int64 [N]: line numbers in the list file

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.paths).encode()).hexdigest()[:16]


def read_list(root: Path, list_file: Path, num_classes: int | None = None) -> FileList:
    """Parse a list file whose images must all exist under `root`. Without `num_classes` it is the
    training list, which defines the classes: 0..the largest label, each with images; other lists'
    labels must be below `num_classes`. Errors name the file and line."""
    paths, labels, lines = _parse_list(list_file)
    if num_classes is None:
        num_classes = _training_classes(list_file, labels)
    outside = next((i for i, label in enumerate(labels) if label >= num_classes), None)
    if outside is not None:
        raise StudyError(
            f"{list_file}:{lines[outside]}: label {labels[outside]} is not a class of the training list (0..{num_classes - 1})"
        )
    _check_images_exist(root, list_file, paths, lines)
    classes = tuple(str(k) for k in range(num_classes))
    return FileList(root, tuple(paths), np.asarray(labels, dtype=np.int64), classes, np.asarray(lines, dtype=np.int64))


def _training_classes(list_file: Path, labels: list[int]) -> int:
    """The class count of a training list: its labels must be 0..K-1 with K >= 2, each present."""
    present = set(labels)
    if len(present) < 2:
        raise StudyError(f"{list_file}: only one class (label {labels[0]}); a classifier needs at least 2")
    if max(present) + 1 != len(present):
        absent = next(k for k in range(len(present)) if k not in present)
        raise StudyError(
            f"{list_file}: class {absent} has no image (the largest label is {max(present)}); "
            "labels are class indices 0..K-1, each with training images"
        )
    return len(present)


def _parse_list(list_file: Path) -> tuple[list[str], list[int], list[int]]:
    """(paths, labels, line numbers) of the non-empty lines of a list file."""
    if list_file.is_dir():
        raise StudyError(f"{list_file}: a folder, not a list file; {LIST_HELP}")
    if not list_file.is_file():
        raise StudyError(f"{list_file}: list file not found; {LIST_HELP}")
    try:
        text = list_file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise StudyError(f"{list_file}: not UTF-8 text (byte {error.start}); {LIST_HELP}") from None
    paths, labels, lines = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not LABEL.fullmatch(parts[1]):
            raise StudyError(f"{list_file}:{number}: expected 'relative/path LABEL' (an integer label), got {excerpt(line)}")
        label = int(parts[1])
        if label < 0:
            raise StudyError(f"{list_file}:{number}: label {label} is negative; labels are class indices 0..K-1")
        paths.append(parts[0])
        labels.append(label)
        lines.append(number)
    if not paths:
        raise StudyError(f"{list_file}: the list is empty; {LIST_HELP}")
    return paths, labels, lines


def _check_images_exist(root: Path, list_file: Path, paths: list[str], lines: list[int]) -> None:
    """Every listed image must be a file under `root` (one stat each: about a second for ImageNet-LT's
    115,846), so a missing image fails here, not in a trial hours later."""
    missing = [i for i, path in enumerate(paths) if not os.path.isfile(os.path.join(root, path))]
    if missing:
        first = missing[0]
        raise StudyError(
            f"{list_file}:{lines[first]}: {paths[first]} not found under {root} "
            f"({len(missing)} of the {len(paths)} listed images are missing; data.root is the folder the paths start from)"
        )


class _ImageFiles(Dataset):
    def __init__(self, files: FileList, transform):
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.files.root / self.files.paths[i]) as image:
            return self.transform(image.convert("RGB")), int(self.files.labels[i])


class StreamingImages:
    """A file-list split streamed through a DataLoader; same interface as TensorImages."""

    def __init__(self, files: FileList, device: torch.device, image_size: int, workers: int):
        self.files, self.device, self.workers = files, device, workers
        self.labels = torch.from_numpy(files.labels).to(device)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def _transform(self, train: bool):
        from torchvision import transforms

        size = self.image_size
        resize = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()] if train else [
            transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size)
        ]  # fmt: skip
        return transforms.Compose([*resize, transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def _loader(self, indices: list[int] | None, batch_size: int, train: bool, seed: int = 0) -> DataLoader:
        return DataLoader(
            _ImageFiles(self.files, self._transform(train)),
            batch_size=batch_size,
            sampler=indices,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(seed),  # seeds the workers' augmentation draws
        )

    def train_batches(
        self, order: torch.Tensor, batch_size: int, rank: int, world_size: int, seed: int, epoch: int, augment: bool
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        shard = torch.cat([index for _, index in shard_batches(order, batch_size, rank, world_size)]).tolist()
        loader = self._loader(shard, batch_size, train=augment, seed=seed * 100_003 + epoch * 1_009 + rank)
        for number, (images, labels) in enumerate(loader):
            yield number, images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        shard = None if world_size == 1 else list(range(rank, len(self), world_size))
        for images, labels in self._loader(shard, batch_size, train=False):
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
