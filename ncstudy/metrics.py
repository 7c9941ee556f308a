"""The documented import path of the frequency groups and the neural-collapse metrics (docs/design.md,
"Public API"); they live in ncstudy.data.groups and ncstudy.method.metrics."""

from ncstudy.data.groups import GROUPS, shot_groups
from ncstudy.method.metrics import neural_collapse

__all__ = ["GROUPS", "neural_collapse", "shot_groups"]
