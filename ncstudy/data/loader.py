"""Tensor-resident batches: a split is held as one uint8 tensor (on the GPU when there is one) and
batched by index; augmentation (ncstudy.data.augment) and normalization run on whole batches on the
device, with no per-sample Python and no DataLoader processes.

Large image sets (ImageNet-LT, iNaturalist, Places-LT) cannot be held this way; they stream from
disk through ncstudy.data.filelist.StreamingImages, which offers the same `train_batches` /
`eval_batches` / `labels` interface.

An epoch is one seeded order of the training set, the same on every Ray Train worker, sharded
rank::world_size and cut to the same number of batches everywhere so DDP stays in lock-step. The
order is a permutation (instance-balanced sampling) or, for cRT and re-sampling baselines, a
class-balanced draw: a class uniformly at random, then an image of it (Kang et al., ICLR 2020,
"Decoupling representation and classifier", ClassAwareSampler).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch

from ncstudy.data.augment import batch_generator, random_crop_flip
from ncstudy.data.sources import LabelledImages


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A torch view of a numpy array; arrays read zero-copy from Ray's object store are read-only,
    which torch warns about, but nothing here writes to them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.asarray(array))


class DeviceSplit(Protocol):
    """What the training loop needs of a split: TensorImages here, or filelist.StreamingImages."""

    labels: torch.Tensor

    def __len__(self) -> int: ...

    def train_batches(
        self, order: torch.Tensor, batch_size: int, rank: int, world_size: int, seed: int, epoch: int, augment: bool
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]: ...

    def eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def augmentation(seed: int, epoch: int, batch: int, enabled: bool) -> torch.Generator | None:
    return batch_generator(seed, epoch, batch) if enabled else None


class TensorImages:
    """One split on a device: uint8 images, int64 labels, and normalized float batches of them."""

    def __init__(self, split: LabelledImages, device: torch.device, mean: torch.Tensor, std: torch.Tensor):
        self.images = _tensor(split.images).to(device)
        self.labels = _tensor(split.labels).to(device)
        self.scale = 1.0 / split.max_value
        self.mean = mean.to(device).view(1, -1, 1, 1)
        self.std = std.to(device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (augmented when a generator is given) as normalized float, and their labels."""
        images = self.images[index]
        if generator is not None:
            images = random_crop_flip(images, generator)
        return (images.float() * self.scale - self.mean) / self.std, self.labels[index]

    def train_batches(
        self, order: torch.Tensor, batch_size: int, rank: int, world_size: int, seed: int, epoch: int, augment: bool
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(batch number, images, labels) of this worker's shard of `order`, augmented on the device."""
        for number, index in shard_batches(order, batch_size, rank, world_size):
            generator = augmentation(seed, epoch, number * world_size + rank, augment)
            yield (number, *self.batch(index.to(self.labels.device), generator))

    def eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Unaugmented batches of this worker's evaluation shard (rank::world_size: every sample once)."""
        if world_size == 1:
            for part in eval_batches(len(self), batch_size):
                yield self.batch(part)
            return
        shard = torch.arange(rank, len(self), world_size, device=self.labels.device)
        for start in range(0, len(shard), batch_size):
            yield self.batch(shard[start : start + batch_size])


def channel_stats(split: LabelledImages) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of a split in [0, 1] units (computed on the long-tailed training set)."""
    images = _tensor(split.images).float() * (1.0 / split.max_value)
    return images.mean(dim=(0, 2, 3)), images.std(dim=(0, 2, 3)).clamp_min(1e-6)


def epoch_order(labels: np.ndarray, seed: int, epoch: int, sampler: str = "instance") -> torch.Tensor:
    """The epoch's sample order, identical on every worker: a permutation, or a class-balanced draw."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    n = len(labels)
    if sampler == "instance":
        return torch.randperm(n, generator=generator)
    if sampler != "class_balanced":
        raise ValueError(f"unknown sampler {sampler!r}")
    labels = torch.as_tensor(np.asarray(labels))
    classes = torch.unique(labels)
    by_class = [torch.nonzero(labels == c).flatten() for c in classes]
    sizes = torch.tensor([len(members) for members in by_class])
    chosen_class = torch.randint(len(classes), (n,), generator=generator)
    position = (torch.rand(n, generator=generator) * sizes[chosen_class]).long()
    starts = torch.cumsum(sizes, 0) - sizes
    return torch.cat(by_class)[starts[chosen_class] + position]


def shard_batches(
    order: torch.Tensor, batch_size: int, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[int, torch.Tensor]]:
    """(batch number, indices) of this worker's shard: disjoint across ranks, equal length on every rank."""
    per_worker = len(order) // world_size
    shard = order[rank::world_size][:per_worker]
    for number, start in enumerate(range(0, per_worker, batch_size)):
        yield number, shard[start : start + batch_size]


def eval_batches(num_samples: int, batch_size: int) -> Iterator[slice]:
    """Contiguous slices over a whole evaluation set."""
    for start in range(0, num_samples, batch_size):
        yield slice(start, min(start + batch_size, num_samples))


