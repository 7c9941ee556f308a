"""Figures of a trial and of a study (matplotlib, Agg backend, PNG).

- `angle_heatmap`: angles between the centred class means (Liu et al., AISTATS 2023, Figure 2: under
  imbalance the tail classes' means crowd together, "minority collapse", Fang et al., PNAS 2021).
- `norm_bars`: norms of the centred class means by class, coloured by frequency group (Figure 3).
- `nc_curves`: NC1, NC2 and the smallest angle over epochs (Papyan, Han & Donoho, PNAS 2020, Fig. 6-7).
- `accuracy_vs_count`: per-class test accuracy against training count (log x), one line per variant.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

GROUP_COLOURS = {"many": "#1f77b4", "medium": "#ff7f0e", "few": "#d62728"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    _pyplot().close(figure)
    return path


def angle_heatmap(angles_deg: np.ndarray, path: Path, title: str = "angles between centred class means") -> Path:
    plt = _pyplot()
    k = len(angles_deg)
    figure, axes = plt.subplots(figsize=(4.8 if k <= 20 else 7, 4.2 if k <= 20 else 6))
    image = axes.imshow(angles_deg, cmap="viridis", vmin=0, vmax=180)
    figure.colorbar(image, ax=axes, label="degrees")
    axes.set_xlabel("class (by training count)")
    axes.set_ylabel("class")
    axes.set_title(title, fontsize=10)
    return _save(figure, path)


def norm_bars(norms: np.ndarray, groups: dict[str, list[int]], path: Path) -> Path:
    plt = _pyplot()
    colour = ["#888888"] * len(norms)
    for name, members in groups.items():
        for k in members:
            colour[k] = GROUP_COLOURS.get(name, "#888888")
    figure, axes = plt.subplots(figsize=(max(4.5, 0.2 * len(norms)), 3.2))
    axes.bar(range(len(norms)), norms, color=colour)
    axes.set_xlabel("class (by training count)")
    axes.set_ylabel("||mu_k - mu_C||")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in GROUP_COLOURS.values()]
    axes.legend(handles, list(GROUP_COLOURS), fontsize=8)
    return _save(figure, path)


def nc_curves(history: Sequence[dict[str, float]], path: Path) -> Path:
    """history: one dict per evaluated epoch with epoch, nc1, nc2_equinorm, nc2_equiangle, min_angle_deg."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    figure, panels = plt.subplots(1, 3, figsize=(10, 3))
    panels[0].semilogy(epochs, [h["nc1"] for h in history], marker="o")
    panels[0].set_title("NC1: Tr(S_W S_B^+)/K", fontsize=9)
    for key in ("nc2_equinorm", "nc2_equiangle", "nc2_maxangle"):
        panels[1].plot(epochs, [h.get(key, np.nan) for h in history], marker="o", label=key.removeprefix("nc2_"))
    panels[1].set_title("NC2", fontsize=9)
    panels[1].legend(fontsize=7)
    for key in ("min_angle_deg", "min_angle_many_deg", "min_angle_few_deg", "min_angle_many_few_deg"):
        if any(key in h for h in history):
            panels[2].plot(epochs, [h.get(key, np.nan) for h in history], marker="o", label=key.removesuffix("_deg"))
    panels[2].set_title("smallest angle (degrees)", fontsize=9)
    panels[2].legend(fontsize=7)
    for panel in panels:
        panel.set_xlabel("epoch")
    return _save(figure, path)


def accuracy_vs_count(curves: dict[str, tuple[Sequence[int], Sequence[float]]], path: Path) -> Path:
    """curves: variant -> (training count per class, test accuracy per class)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 3.5))
    for label, (counts, accuracy) in curves.items():
        order = np.argsort(counts)[::-1]
        axes.plot(np.asarray(counts)[order], 100 * np.asarray(accuracy)[order], marker="o", label=label)
    axes.set_xscale("log")
    axes.invert_xaxis()
    axes.set_xlabel("training images of the class (log)")
    axes.set_ylabel("test accuracy (%)")
    axes.legend(fontsize=7)
    return _save(figure, path)


def metric_curves(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]], ylabel: str, path: Path, log: bool = False
) -> Path:
    """One line per variant: (epochs, values) of a metric over training."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 3.5))
    for label, (epochs, values) in curves.items():
        axes.plot(epochs, values, marker="o", label=label)
    if log:
        axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.legend(fontsize=7)
    return _save(figure, path)


def optuna_figures(study, folder: Path) -> list[Path]:
    """Optimization history, parameter importances and parallel coordinates of an Optuna study
    (optuna.visualization.matplotlib); a plot that needs more completed trials is skipped."""
    import optuna
    import optuna.visualization.matplotlib as plots

    _pyplot()
    written = []
    for name, plot in (("optuna_history", plots.plot_optimization_history),
                       ("optuna_importances", plots.plot_param_importances),
                       ("optuna_parallel", plots.plot_parallel_coordinate)):  # fmt: skip
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)  # matplotlib on a parameter with one value
                axes = plot(study)
        except (ValueError, RuntimeError):  # e.g. importances need two completed trials and a varying parameter
            continue
        figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
        written.append(_save(figure, folder / f"{name}.png"))
    return written
