"""Models return `(logits, features)`: features are the penultimate, globally pooled activations h.
Every model has `feature_dim` and a `classifier` head with `weight` [K, P] and `bias`."""

from __future__ import annotations

from torch import nn

from ncstudy.config import ModelConfig
from ncstudy.models.digits_cnn import DigitsCNN
from ncstudy.models.resnet_cifar import ResNetCifar
from ncstudy.models.torchvision_backbones import ARCHS as TORCHVISION_ARCHS
from ncstudy.models.torchvision_backbones import TorchvisionBackbone

CIFAR_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet56": 56}


def build_model(config: ModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    if config.arch == "digits_cnn":
        return DigitsCNN(in_channels, num_classes, config.width, config.feature_dim, config.head, config.head_scale)
    if config.arch in CIFAR_DEPTHS:
        return ResNetCifar(CIFAR_DEPTHS[config.arch], num_classes, config.head, in_channels, config.head_scale)
    if config.arch in TORCHVISION_ARCHS:
        if in_channels != 3:
            raise ValueError(f"model.arch {config.arch} takes RGB images, the data has {in_channels} channel(s)")
        return TorchvisionBackbone(config.arch, num_classes, config.head, config.head_scale)
    raise ValueError(f"model.arch: unknown architecture {config.arch!r}")
