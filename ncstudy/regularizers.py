"""The documented import path of the regularizers (docs/design.md, "Public API"); they live in
ncstudy.method.regularizers."""

from ncstudy.method.regularizers import between_class_loss, within_class_loss

__all__ = ["between_class_loss", "within_class_loss"]
