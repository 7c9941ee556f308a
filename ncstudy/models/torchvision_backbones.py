"""ImageNet-size backbones from torchvision (randomly initialized, nothing is downloaded) with our heads.

ResNeXt-50 (32x4d) is the backbone of Liu et al. (AISTATS 2023) for ImageNet-LT; ResNet-18 and
ResNet-50 are the usual smaller and equal-cost alternatives. The torchvision `fc` layer is replaced
by an identity, so the features h are the globally average-pooled (not normalized) 512-d or 2048-d
vectors, and the head from `ncstudy.models.heads` is `classifier`.
"""

from __future__ import annotations

import torch
from torch import nn

from ncstudy.models.heads import build_head

ARCHS = ("resnet18", "resnet50", "resnext50_32x4d")


class TorchvisionBackbone(nn.Module):
    """A torchvision ResNet/ResNeXt trunk; returns (logits, pooled features)."""

    def __init__(self, arch: str, num_classes: int, head: str = "linear", head_scale: float = 16.0):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown torchvision architecture {arch!r}; expected one of {', '.join(ARCHS)}")
        # Imported here, not at module level: torchvision's import pulls in torch._dynamo (about 2 s
        # on 2 cores), which every Ray process that imports ncstudy.models would otherwise pay at
        # start-up, although only these ImageNet-size backbones need it.
        import torchvision

        self.backbone = getattr(torchvision.models, arch)(weights=None)
        self._feature_dim = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()
        self.classifier = build_head(head, self._feature_dim, num_classes, head_scale)

    @property
    def feature_dim(self) -> int:
        return self._feature_dim

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(images)
        return self.classifier(features), features
