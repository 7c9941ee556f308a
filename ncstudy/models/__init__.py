"""Models return `(logits, features)`: features are the penultimate, globally pooled activations h."""

from __future__ import annotations

from torch import nn

from ncstudy.config import ModelConfig
from ncstudy.models.digits_cnn import DigitsCNN


def build_model(config: ModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    if config.arch == "digits_cnn":
        return DigitsCNN(in_channels, num_classes, width=config.width, feature_dim=config.feature_dim)
    raise ValueError(f"model.arch: unknown architecture {config.arch!r}")
