"""A small CNN for 8x8 digits: three 3x3 conv-BN-ReLU blocks, global average pooling, a head.

The pooled features are not normalized (as in the CIFAR ResNets the paper uses), so L_W and L_B act
on the same kind of representation.
"""

from __future__ import annotations

import torch
from torch import nn

from ncstudy.models.heads import build_head


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DigitsCNN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 32,
        feature_dim: int = 64,
        head: str = "linear",
        head_scale: float = 16.0,
    ):
        super().__init__()
        self.body = nn.Sequential(
            _block(in_channels, width),
            _block(width, 2 * width),
            nn.MaxPool2d(2),
            _block(2 * width, feature_dim),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self._feature_dim = feature_dim
        self.classifier = build_head(head, feature_dim, num_classes, head_scale)

    @property
    def feature_dim(self) -> int:
        return self._feature_dim

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(images)
        return self.classifier(features), features
