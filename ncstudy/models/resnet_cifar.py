"""The CIFAR ResNets (He et al., CVPR 2016, Section 4.2) as LDAM-DRW builds them (Cao et al.,
NeurIPS 2019, models/resnet_cifar.py), the backbone of Liu et al. (AISTATS 2023) for CIFAR-LT.

A 3x3 stem of 16 channels, three stages of n BasicBlocks with 16/32/64 channels (depth = 6n + 2:
ResNet-20 n=3, ResNet-32 n=5, ResNet-56 n=9), option-A shortcuts (the identity subsampled with
stride 2 and zero-padded in channels, so shortcuts add no parameters), kaiming-normal init of every
conv and linear weight, global average pooling to 64-d features h (not normalized), then a head
from `ncstudy.models.heads`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ncstudy.models.heads import build_head

STAGE_CHANNELS = (16, 32, 64)


class PadShortcut(nn.Module):
    """Option-A shortcut: keep every other pixel, zero-pad the new channels evenly on both sides."""

    def __init__(self, in_planes: int, planes: int):
        super().__init__()
        extra = planes - in_planes
        self.channel_padding = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, *self.channel_padding))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_projection = stride != 1 or in_planes != planes
        self.shortcut = PadShortcut(in_planes, planes) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _kaiming_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight)


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32x32 images; returns (logits, 64-d pooled features)."""

    def __init__(
        self,
        depth: int,
        num_classes: int,
        head: str = "linear",
        in_channels: int = 3,
        head_scale: float = 16.0,
    ):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (20, 32, 56, ...), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, STAGE_CHANNELS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_CHANNELS[0])
        in_planes = STAGE_CHANNELS[0]
        stages = []
        for index, planes in enumerate(STAGE_CHANNELS):
            first_stride = 1 if index == 0 else 2
            blocks = []
            for stride in [first_stride] + [1] * (blocks_per_stage - 1):
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.classifier = build_head(head, self.feature_dim, num_classes, head_scale)
        self.apply(_kaiming_init)

    @property
    def feature_dim(self) -> int:
        return STAGE_CHANNELS[-1]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(images)))
        out = self.layer3(self.layer2(self.layer1(out)))
        features = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.classifier(features), features


def resnet20(num_classes: int, head: str = "linear", in_channels: int = 3, head_scale: float = 16.0) -> ResNetCifar:
    return ResNetCifar(20, num_classes, head, in_channels, head_scale)


def resnet32(num_classes: int, head: str = "linear", in_channels: int = 3, head_scale: float = 16.0) -> ResNetCifar:
    return ResNetCifar(32, num_classes, head, in_channels, head_scale)


def resnet56(num_classes: int, head: str = "linear", in_channels: int = 3, head_scale: float = 16.0) -> ResNetCifar:
    return ResNetCifar(56, num_classes, head, in_channels, head_scale)
