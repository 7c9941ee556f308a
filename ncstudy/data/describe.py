"""`python -m ncstudy data describe`: what a study's data really is, before any training.

Per class: training (long-tailed), validation and test counts and the frequency group; group sizes;
a bar chart of the profile in the terminal and, on request, as a PNG (log-scale counts, bars
coloured by group, as in the long-tailed literature's profile plots).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ncstudy.atomic import replaced_atomically
from ncstudy.config import DataConfig
from ncstudy.data.build import StudyData
from ncstudy.data.groups import GROUPS

BAR_WIDTH = 40


def _group_of(data: StudyData) -> dict[int, str]:
    return {k: name for name, members in data.groups.items() for k in members}


def describe_text(data: StudyData, config: DataConfig) -> str:
    val = np.bincount(data.val.labels, minlength=data.num_classes)
    test = np.bincount(data.test.labels, minlength=data.num_classes)
    group_of = _group_of(data)
    imbalance = config.imbalance
    where = f"{config.dataset}{f' ({config.root})' if config.root else ''}"
    if config.dataset == "filelist":
        shape = f"the lists define the splits (imbalance {max(data.train_counts) / min(data.train_counts):.0f})"
    else:
        shape = f"{imbalance.profile} profile, ratio {imbalance.ratio:g}, n_max {max(data.profile_counts or data.train_counts)}, data seed {config.seed}"
    lines = [
        f"{where}: {shape}, split fingerprint {data.fingerprint}",
        "",
        f"{'class':<14}{'train':>7}{'val':>6}{'test':>7}  {'group':<7}profile",
    ]
    largest = max(data.train_counts)
    for k, count in enumerate(data.train_counts):
        bar = "#" * max(1, round(BAR_WIDTH * count / largest))
        lines.append(f"{data.train.classes[k][:13]:<14}{count:>7}{val[k]:>6}{test[k]:>7}  {group_of.get(k, '-'):<7}{bar}")
    lines.append("")
    sizes = ", ".join(
        f"{name} {len(data.groups[name])} classes ({sum(data.train_counts[k] for k in data.groups[name])} images)"
        for name in GROUPS
    )
    lines.append(f"groups: {sizes}")
    lines.append(f"total: train {sum(data.train_counts)}, val {int(val.sum())}, test {int(test.sum())}")
    if data.counts_note:
        lines.append(
            f"note: training counts below the {imbalance.profile} profile's, so that every class keeps "
            f"{config.val_per_class} validation images: {data.counts_note}; set data.imbalance.n_max lower for the exact profile"
        )
    return "\n".join(lines)


def plot_profile(data: StudyData, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"many": "#1f77b4", "medium": "#ff7f0e", "few": "#d62728"}
    group_of = _group_of(data)
    figure, axes = plt.subplots(figsize=(max(6, 0.25 * data.num_classes), 3.5))
    axes.bar(range(data.num_classes), data.train_counts, color=[colours[group_of[k]] for k in range(data.num_classes)])
    axes.set_yscale("log")
    axes.set_xlabel("class (sorted by training count)")
    axes.set_ylabel("training images")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[g]) for g in GROUPS]
    axes.legend(handles, [f"{g} ({len(data.groups[g])})" for g in GROUPS])
    figure.tight_layout()
    with replaced_atomically(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    plt.close(figure)
