"""Batched augmentation on the device: the CIFAR recipe of He et al. (2016) used by LDAM-DRW and the
paper (random 32x32 crop of the image zero-padded by 4 pixels, random horizontal flip), applied to a
whole uint8 batch with one gather, no per-sample Python.

Randomness comes from a CPU `torch.Generator` seeded by (seed, epoch, batch), so a batch is augmented
the same way on CPU and GPU and on every rerun.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 100_003 + batch)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Crop every image of [B, C, H, W] at a random offset of its zero-padded copy; flip half of them."""
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offset_y = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(images.device)
    offset_x = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(images.device)
    flip = torch.rand(b, generator=generator).to(images.device) < 0.5
    columns = torch.arange(w, device=images.device)
    columns = torch.where(flip[:, None], w - 1 - columns, columns)  # a flip is a reversed column order
    rows = offset_y[:, None] + torch.arange(h, device=images.device)
    columns = offset_x[:, None] + columns
    batch_index = torch.arange(b, device=images.device)[:, None, None, None]
    channel_index = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch_index, channel_index, rows[:, None, :, None], columns[:, None, None, :]]
