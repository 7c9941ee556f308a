"""Tensor-resident batches: the data set is converted to a float tensor once and batched by index.

There is no per-sample Python work and no DataLoader process: an epoch is one seeded permutation,
sharded across Ray Train workers (rank::world_size) and cut to the same number of batches on every
worker so DDP stays in lock-step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ncstudy.data.sources import LabelledImages


def to_tensors(images: LabelledImages, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, C, H, W] -> float in [0, 1] on `device`, and int64 labels."""
    x = torch.from_numpy(images.images).to(device=device, dtype=torch.float32).div_(images.max_value)
    y = torch.from_numpy(images.labels).to(device=device, dtype=torch.long)
    return x, y


class Normalizer:
    """Per-channel standardization with the training set's statistics."""

    def __init__(self, train_images: torch.Tensor):
        self.mean = train_images.mean(dim=(0, 2, 3), keepdim=True)
        self.std = train_images.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def epoch_batches(
    num_samples: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
) -> Iterator[torch.Tensor]:
    """Index batches for one training epoch: same permutation on every worker, a disjoint shard each."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_samples, generator=generator)
    per_worker = num_samples // world_size
    shard = order[rank::world_size][:per_worker]
    if device is not None:
        shard = shard.to(device)
    for start in range(0, per_worker, batch_size):
        yield shard[start : start + batch_size]


def eval_batches(num_samples: int, batch_size: int) -> Iterator[slice]:
    """Contiguous slices over a whole evaluation set."""
    for start in range(0, num_samples, batch_size):
        yield slice(start, min(start + batch_size, num_samples))
