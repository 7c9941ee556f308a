"""The training recipe around the step: learning-rate schedule, mixup, precision and memory format.

- Schedule: linear warm-up over `warmup_epochs`, then a multistep decay (x gamma at each milestone,
  the LDAM-DRW recipe the paper follows: 5 warm-up epochs, x0.1 at 160 and 180) or a cosine decay.
- Mixup (Zhang et al., ICLR 2018): images mixed with a shuffled copy by lambda ~ Beta(a, a); the
  loss mixes the two labels' losses. Draws are seeded per (seed, epoch, batch).
- On CUDA: bf16 autocast and channels_last (the Hopper-friendly defaults); fp32 on the CPU.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from ncstudy.config import TrainConfig


def learning_rate(epoch: int, config: TrainConfig) -> float:
    """The learning rate of a main-stage epoch."""
    if epoch < config.warmup_epochs:
        return config.lr * (epoch + 1) / config.warmup_epochs
    if config.schedule == "cosine":
        span = max(config.epochs - config.warmup_epochs, 1)
        return config.lr * 0.5 * (1 + math.cos(math.pi * (epoch - config.warmup_epochs) / span))
    return config.lr * config.gamma ** sum(epoch >= m for m in config.milestones)


def crt_learning_rate(stage_epoch: int, config: TrainConfig) -> float:
    """cRT (Kang et al., ICLR 2020): cosine decay from crt_lr over the stage."""
    return config.crt_lr * 0.5 * (1 + math.cos(math.pi * stage_epoch / max(config.crt_epochs, 1)))


@dataclass(frozen=True)
class Mix:
    """A mixup draw: images x = lam * x + (1 - lam) * x[perm]; labels_b = labels[perm]."""

    lam: float
    permutation: torch.Tensor

    def images(self, images: torch.Tensor) -> torch.Tensor:
        return self.lam * images + (1 - self.lam) * images[self.permutation]

    def labels_b(self, labels: torch.Tensor) -> torch.Tensor:
        return labels[self.permutation]

    def dominant(self, labels: torch.Tensor) -> torch.Tensor:
        """The labels of the larger share: what the feature regularizers use on mixed images."""
        return labels if self.lam >= 0.5 else self.labels_b(labels)


def draw_mix(alpha: float, batch: int, seed: int, epoch: int, number: int, device: torch.device) -> Mix | None:
    if alpha <= 0:
        return None
    rng = np.random.default_rng([seed, epoch, number])
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return Mix(float(rng.beta(alpha, alpha)), torch.randperm(batch, generator=generator).to(device))


def use_bf16(config: TrainConfig, device: torch.device) -> bool:
    if config.precision == "auto":
        return device.type == "cuda"
    return config.precision == "bf16"


def autocast(enabled: bool, device: torch.device):
    """bf16 autocast for the forward pass, or nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()
