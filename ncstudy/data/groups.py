"""The frequency groups of the long-tail metrics: which classes count as many-, medium- and few-shot.

Groups follow the many/medium/few-shot split of Liu et al. (CVPR 2019, OLTR) and Kang et al.
(ICLR 2020, decoupling): many-shot classes have more than 100 training images, few-shot fewer than
20, medium the rest (`shot_groups`); `frequency_groups` picks the study's rule (`data.shot_split`).
"""

from __future__ import annotations

from collections.abc import Sequence

GROUPS = ("many", "medium", "few")


def shot_groups(train_counts: Sequence[int], many_gt: int = 100, few_lt: int = 20) -> dict[str, list[int]]:
    """Class indices per group: many if n > many_gt, few if n < few_lt, medium otherwise."""
    groups: dict[str, list[int]] = {name: [] for name in GROUPS}
    for k, n in enumerate(train_counts):
        if n > many_gt:
            groups["many"].append(k)
        elif n < few_lt:
            groups["few"].append(k)
        else:
            groups["medium"].append(k)
    return groups


def index_range_groups(num_classes: int, boundaries: tuple[int, int] = (3, 7)) -> dict[str, list[int]]:
    """Classes [0, a) many, [a, b) medium, [b, K) few: for data sets ordered by frequency, such as
    CIFAR-10-LT, where thresholds 100/20 would give 8/2/0."""
    a, b = min(boundaries[0], num_classes), min(boundaries[1], num_classes)
    return {"many": list(range(a)), "medium": list(range(a, b)), "few": list(range(b, num_classes))}


def quantile_groups(train_counts: Sequence[int], quantiles: tuple[float, float] = (1 / 3, 2 / 3)) -> dict[str, list[int]]:
    """Rank classes by training count (ties by index): the first q1 share many, up to q2 medium, the rest few."""
    k = len(train_counts)
    ranked = sorted(range(k), key=lambda c: (-train_counts[c], c))
    a, b = round(quantiles[0] * k), round(quantiles[1] * k)
    return {"many": sorted(ranked[:a]), "medium": sorted(ranked[a:b]), "few": sorted(ranked[b:])}


def frequency_groups(train_counts: Sequence[int], split) -> dict[str, list[int]]:
    """Groups by the rule of a `ShotSplitConfig` (rule None: index_ranges for 10 classes, else threshold)."""
    rule = split.rule or ("index_ranges" if len(train_counts) == 10 else "threshold")
    if rule == "index_ranges":
        return index_range_groups(len(train_counts), split.boundaries)
    if rule == "quantile":
        return quantile_groups(train_counts, split.quantiles)
    return shot_groups(train_counts, split.many_gt, split.few_lt)
