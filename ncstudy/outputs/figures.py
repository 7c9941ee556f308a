"""Figures of a trial and of a study (matplotlib, Agg backend, PNG).

- `angle_heatmaps`: angles between the centred class means as Figure 2 of Liu et al. (AISTATS 2023)
  shows them, a panel per model side by side (the report: the baseline beside the best configuration)
  on one colour scale, classes named and in training-count order, most images first (under
  imbalance the tail classes' means crowd together, "minority collapse", Fang et al., PNAS 2021).
- `norm_bars`: norms of the centred class means by class, coloured by frequency group (Figure 3).
- `nc_curves`: NC1, NC2 and the smallest angle over epochs (Papyan, Han & Donoho, PNAS 2020, Fig. 6-7).

Epoch axes are ticked at whole epochs only (matplotlib's MaxNLocator(integer=True)): a trial measured
once would otherwise sit on an axis ticked 2.85 ... 3.15. A figure over epochs needs a trend to show:
`metric_curves` (the study's NC1 and smallest angle over epochs, one line per configuration) draws
nothing when no configuration was measured twice (metrics.every 0, or a run shorter than it), since
its one point per configuration is the final value that the report's NC tables already give, and the
report says so instead. `nc_curves` (a trial's own figure) is drawn all the same, as markers: it is
one of the three files every trial's MLflow run and `ncstudy train` folder holds.
- `trial_figures`: those three for one trial, from its final checkpoint's arrays (drawn once
  training has ended, by the study driver as it logs the trial's MLflow run,
  ncstudy.study.trial_runs, or by `ncstudy train`; never in a process that trains).
- `accuracy_vs_count`: per-class test accuracy against training count (log x), one line per variant.
- `optuna_figures`: Optuna's optimization history, parameter importances and parallel coordinates;
  for a multi-objective Optuna study (search.objectives) its Pareto front in place of the history,
  which Optuna draws for one objective only (it raises without a `target` otherwise).
- `pareto_front`: a multi-objective study's configurations on two objectives (the test counterparts
  of the first two), each variant's front as a staircase in its colour, the dominated points faint
  (ncstudy.outputs.pareto).
- `best_by_stratum`: the best value of each searched parameter against the stratum's value (one
  panel per parameter), e.g. the best lambda_W and lambda_B per imbalance ratio (search.strata).

Every legend sits outside its axes, so it never covers data, and every figure is written to a
temporary file beside its path and then renamed, so an interrupted report never leaves half a PNG.
"""

from __future__ import annotations

import json
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ncstudy.atomic import replaced_atomically
from ncstudy.data.groups import GROUPS
from ncstudy.outputs.pareto import non_dominated

GROUP_COLOURS = {"many": "#1f77b4", "medium": "#ff7f0e", "few": "#d62728"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legends_outside(figure) -> None:
    """Move each legend placed inside its axes (by `loc` alone) to the right of them, top-aligned,
    and widen the figure by the legends' widths, so that the axes keep their size."""
    moved = []
    for axes in figure.axes:
        legend = axes.get_legend()
        if legend is not None and legend.get_bbox_to_anchor() is axes.bbox:
            legend.set_loc("upper left")
            legend.set_bbox_to_anchor((1.02, 1.0), transform=axes.transAxes)
            moved.append(legend)
    if moved:
        renderer = figure.canvas.get_renderer()
        extra = sum(legend.get_window_extent(renderer).width / figure.dpi + 0.1 for legend in moved)
        width, height = figure.get_size_inches()
        figure.set_size_inches(width + extra, height)


def _save(figure, path: Path) -> Path:
    """Write `figure` as PNG to `path` (legends outside the axes, the image cropped to what was
    drawn) through a temporary file in the same folder and a rename; close it."""
    try:
        _legends_outside(figure)
        figure.tight_layout()
        with replaced_atomically(path) as temporary:
            figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    finally:
        _pyplot().close(figure)
    return path


def _count_order(counts: Sequence[int]) -> np.ndarray:
    """Class indices by training count, most images first (ties by index)."""
    return np.asarray(sorted(range(len(counts)), key=lambda k: (-counts[k], k)))


def angle_heatmaps(
    panels: dict[str, np.ndarray], counts: Sequence[int], path: Path, class_names: Sequence[str] | None = None
) -> Path:
    """panels: title -> angles between centred class means [K, K] (degrees, class-index order), drawn
    side by side (Liu et al., AISTATS 2023, Figure 2); rows and columns in training-count order
    (`counts`, most images first), ticked with `class_names` (the class index where None); one colour
    scale over every panel, from the smallest to the largest angle off the diagonals (the diagonal,
    a class with itself, is left blank), so equal colours are equal angles in every panel."""
    plt = _pyplot()
    order = _count_order(counts)
    names = [str(k) for k in order] if class_names is None else [str(class_names[k]) for k in order]
    off_diagonal = ~np.eye(len(order), dtype=bool)
    shown = [np.ma.masked_where(~off_diagonal, np.asarray(angles)[np.ix_(order, order)]) for angles in panels.values()]
    low, high = min(float(a.min()) for a in shown), max(float(a.max()) for a in shown)
    side = 4.2 if len(order) <= 20 else 6.5
    figure, (*axes_list, bar) = plt.subplots(
        1, len(shown) + 1, figsize=(side * len(shown) + 1.2, side + 0.6), width_ratios=[1] * len(shown) + [0.05]
    )  # the last column: the colour bar that every panel shares
    colours = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    step = max(1, len(order) // 25)  # at most ~25 names per axis
    for axes, title, angles in zip(axes_list, panels, shown):
        image = axes.imshow(angles, cmap=colours, vmin=low, vmax=high)
        ticks = np.arange(0, len(order), step)
        axes.set_xticks(ticks, [names[t] for t in ticks], rotation=90, fontsize=7)
        axes.set_yticks(ticks, [names[t] for t in ticks], fontsize=7)
        axes.set_xlabel("class (most training images first)")
        axes.set_title(textwrap.fill(title, 48), fontsize=9)
    axes_list[0].set_ylabel("class")
    figure.colorbar(image, cax=bar, label="angle between centred class means (degrees)")
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


def _integer_epochs(axes, epochs: Sequence[float]) -> None:
    """Tick the x axis at whole epochs only; one measured epoch gets the epochs beside it as room."""
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    measured = sorted(set(epochs))
    if len(measured) == 1:
        axes.set_xlim(measured[0] - 1, measured[0] + 1)
    axes.set_xlabel("epoch")


def nc_curves(history: Sequence[dict[str, float]], path: Path) -> Path:
    """history: one dict per evaluated epoch with epoch, nc1, nc2_equinorm, nc2_equiangle, min_angle_deg.
    Markers joined by lines; a history of one epoch gives markers at that epoch, titled so."""
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
        _integer_epochs(panel, epochs)
    if len(set(epochs)) == 1:
        figure.suptitle(f"measured once, at epoch {epochs[0]:g} (metrics.every sets how often)", fontsize=9)
    return _save(figure, path)


def trial_figures(collapse_file: Path, folder: Path) -> list[Path]:
    """The figures of one trial, drawn from the arrays of its final checkpoint
    (ncstudy.engine.checkpoint: collapse.npz): angles.png, norms.png and nc_curves.png in `folder`."""
    arrays = np.load(collapse_file)
    groups = {name: np.flatnonzero(arrays["group_of"] == number).tolist() for number, name in enumerate(GROUPS)}
    return [
        angle_heatmaps({"angles between centred class means": arrays["angles_deg"]}, arrays["train_counts"],
                       folder / "angles.png"),
        norm_bars(arrays["mean_norms"], groups, folder / "norms.png"),
        nc_curves(json.loads(str(arrays["nc_history"])), folder / "nc_curves.png"),
    ]


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


def measured_twice(curves: dict[str, tuple[Sequence[float], Sequence[float]]]) -> bool:
    """Whether some line of `curves` (label -> (epochs, values)) has values at two epochs or more:
    only then is there a course over epochs to draw."""
    return any(len({e for e, v in zip(epochs, values) if not _missing(v)}) >= 2 for epochs, values in curves.values())


def metric_curves(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]], ylabel: str, path: Path, log: bool = False
) -> Path | None:
    """One line per variant: (epochs, values) of a metric over training, at whole-epoch ticks; None,
    and nothing written, when no line was measured at two epochs (`measured_twice`, module docstring)."""
    if not measured_twice(curves):
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 3.5))
    for label, (epochs, values) in curves.items():
        axes.plot(epochs, values, marker="o", label=label)
    if log:
        axes.set_yscale("log")
    _integer_epochs(axes, [e for epochs, _ in curves.values() for e in epochs])
    axes.set_ylabel(ylabel)
    axes.legend(fontsize=7)
    return _save(figure, path)


def _objective_name(study) -> str:
    """The name of an Optuna study's objective (ncstudy.study.search.name_objective), or Optuna's default."""
    return study.metric_names[0] if study.metric_names else "Objective Value"


def _objective_names(study) -> list[str]:
    """The names of a multi-objective Optuna study's objectives, or Optuna's defaults ("Objective 0", ...)."""
    return list(study.metric_names or [f"Objective {i}" for i in range(len(study.directions))])


def _plotted_params(study) -> list[str]:
    """The parameters of the completed trials whose objectives are all finite, sorted: the axes that
    Optuna's parallel-coordinate plot draws after the objectives', in its order."""
    import optuna

    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    finite = [t for t in trials if t.values is not None and all(np.isfinite(v) for v in t.values)]
    return sorted({name for t in finite for name in t.params})


def _full_axis_names(axes, names: list[str]) -> None:
    """Optuna cuts an axis name of 20 characters or more to 17 and "..."; show the full `names`
    (where each shown label is the start of the full name at its place), slanted so that they do
    not run into each other, on a figure wide enough for every axis."""
    shown = [label.get_text() for label in axes.get_xticklabels()]
    if len(shown) == len(names) and all(full.startswith(text.removesuffix("...")) for text, full in zip(shown, names)):
        axes.set_xticks(axes.get_xticks(), names, rotation=30, ha="right", rotation_mode="anchor")
    axes.figure.set_size_inches(max(6.4, 1.4 * len(names) + 2.0), 4.8)


def optuna_figures(study, folder: Path, suffix: str = "") -> list[Path]:
    """Optimization history, parameter importances and parallel coordinates of an Optuna study
    (optuna.visualization.matplotlib), the objective named by its metric and the parallel axes by
    the full parameter names, as folder/optuna_<plot><suffix>.png; a plot that needs more completed
    trials is skipped. A multi-objective study gets its Pareto front (optuna_pareto_front, the axes
    named by the objectives; the first two where there are more than three, the most Optuna draws)
    in place of the history, which Optuna draws for one objective only; Optuna's importances (a bar
    per objective) and parallel coordinates (an axis per objective, lines coloured by Pareto rank)
    take every objective at once."""
    import optuna
    import optuna.visualization.matplotlib as plots

    if len(study.directions) == 1:
        objective = _objective_name(study)
        plotted = (("optuna_history", plots.plot_optimization_history, {"target_name": objective}),
                   ("optuna_importances", plots.plot_param_importances, {"target_name": objective}),
                   ("optuna_parallel", plots.plot_parallel_coordinate, {"target_name": objective}))  # fmt: skip
        objectives = [objective]
    else:
        objectives = _objective_names(study)
        front = {"target_names": objectives}
        if len(objectives) > 3:
            front = {"target_names": objectives[:2], "targets": lambda trial: trial.values[:2]}
        plotted = (("optuna_pareto_front", plots.plot_pareto_front, front),
                   ("optuna_importances", plots.plot_param_importances, {}),
                   ("optuna_parallel", plots.plot_parallel_coordinate, {}))  # fmt: skip
    plt = _pyplot()
    written = []
    for name, plot, arguments in plotted:
        # rc_context: the importances plot switches matplotlib's global style to ggplot
        with warnings.catch_warnings(), plt.rc_context():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)  # matplotlib on a parameter with one value
            try:
                axes = plot(study, **arguments)
            except (ValueError, RuntimeError):  # e.g. importances need two completed trials and a varying parameter
                continue
            if plot is plots.plot_parallel_coordinate:
                _full_axis_names(axes, [*objectives, *_plotted_params(study)])
            figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
            written.append(_save(figure, folder / f"{name}{suffix}.png"))
    return written


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _missing(value) -> bool:
    return value is None or (_is_number(value) and np.isnan(value))


def best_by_stratum(
    panels: dict[str, dict[str, tuple[Sequence, Sequence]]],
    x_label: str,
    path: Path,
    log_y: Sequence[str] = (),
    ranges: dict[str, tuple[float, float]] | None = None,
) -> Path:
    """panels: parameter -> {line label: (stratum values, best values)}, one panel per parameter,
    one line per combination of any further strata keys (label "" for a single key: no legend).
    x is logarithmic for positive numeric strata spanning a factor 10 or more (imbalance ratios),
    y for the parameters in `log_y` (loguniform ones), spanning the parameter's searched range
    (`ranges`, so a best value at the edge of the space shows as one); a missing best value (e.g.
    the hard-min temperature, null) is marked "none" at the bottom of its panel."""
    plt = _pyplot()
    xs_all = [x for lines in panels.values() for xs, _ in lines.values() for x in xs]
    numeric_x = all(_is_number(x) for x in xs_all)
    positive = numeric_x and xs_all and min(xs_all) > 0
    log_x = bool(positive and max(xs_all) / min(xs_all) >= 10)
    figure, axes_list = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 0.6, 3.2), squeeze=False)
    for axes, (parameter, lines) in zip(axes_list[0], panels.items()):
        for label, (xs, ys) in lines.items():
            xs = list(xs) if numeric_x else [str("none" if _missing(x) else x) for x in xs]
            values = [np.nan if _missing(y) else float(y) for y in ys]
            line = axes.plot(xs, values, marker="o", label=label or None)[0]
            for x, y in zip(xs, ys):
                if _missing(y):
                    axes.plot([x], [0.03], marker="x", color=line.get_color(), transform=axes.get_xaxis_transform())
                    axes.text(x, 0.07, "none", transform=axes.get_xaxis_transform(), ha="center", fontsize=7, clip_on=False)
        if log_x:
            axes.set_xscale("log")
        if numeric_x:
            ticks = sorted(set(xs_all))
            axes.set_xticks(ticks, [f"{t:g}" for t in ticks])
            axes.xaxis.set_minor_locator(plt.NullLocator())  # only the strata's own values are ticked
        if parameter in log_y:
            axes.set_yscale("log")
        low, high = (ranges or {}).get(parameter, (None, None))
        if low is not None and high is not None and low < high:
            nones = any(_missing(y) for _, ys in lines.values() for y in ys)  # room below the range for "none"
            if parameter in log_y:
                axes.set_ylim(low / (3.0 if nones else 1.25), high * 1.25)
            else:
                axes.set_ylim(low - (0.25 if nones else 0.05) * (high - low), high + 0.05 * (high - low))
        axes.set_xlabel(x_label)
        axes.set_ylabel(f"best {parameter.rsplit('.', 1)[-1]}")
        axes.set_title(parameter, fontsize=9)
        if any(lines):
            axes.legend(fontsize=7)
    return _save(figure, path)


def _staircase(points: np.ndarray, maximize: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """The outline of the region that `points` (n, 2) dominate, from corner to corner: the points
    that no other of them dominates, in order along the first objective (worst first), joined by
    the inner corners (x of one, y of the next). Its area down to the reference point is their
    hypervolume (ncstudy.outputs.pareto)."""
    corners = points[non_dominated(points, maximize)]
    signs = np.where(np.asarray(maximize, dtype=bool), 1.0, -1.0)
    corners = corners[np.argsort(corners[:, 0] * signs[0], kind="stable")]
    xs, ys = [], []
    for i, (x, y) in enumerate(corners):
        xs.append(x)
        ys.append(y)
        if i + 1 < len(corners):  # the inner corner before the next point
            xs.append(x)
            ys.append(corners[i + 1, 1])
    return np.array(xs), np.array(ys)


def pareto_front(
    variants: dict[str, tuple[np.ndarray, np.ndarray]],
    maximize: Sequence[bool],
    axis_labels: tuple[str, str],
    path: Path,
    title: str | None = None,
) -> Path:
    """variants: label -> (points (n, 2): each configuration's mean on the two plotted objectives, in
    the units to show; on_front (n,): whether it is on the variant's front). One colour per variant;
    a configuration off its front faint; the front's points drawn solid and joined by the outline of
    the region they dominate (`_staircase`), so the line is the front whose hypervolume the report
    gives. `maximize` says each axis' direction (an arrow in its label points to better)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 4.2))
    for index, (label, (points, on_front)) in enumerate(variants.items()):
        points, on_front = np.asarray(points, dtype=float).reshape(-1, 2), np.asarray(on_front, dtype=bool)
        colour = f"C{index % 10}"
        axes.scatter(points[~on_front, 0], points[~on_front, 1], s=18, color=colour, alpha=0.25, linewidths=0)
        front = points[on_front & ~np.isnan(points).any(axis=1)]
        axes.scatter(front[:, 0], front[:, 1], s=30, color=colour, edgecolors="black", linewidths=0.5, zorder=3)
        if len(front):
            xs, ys = _staircase(front, maximize)
            axes.plot(xs, ys, color=colour, linewidth=1.5, label=label, zorder=2)
    handles, labels = axes.get_legend_handles_labels()
    handles.append(plt.Line2D([], [], linestyle="", marker="o", color="#555555", alpha=0.25))
    labels.append("off the front (faint)")
    arrows = [("→" if up else "←", "↑" if up else "↓") for up in maximize]
    axes.set_xlabel(f"{axis_labels[0]} ({arrows[0][0]} better)")
    axes.set_ylabel(f"{axis_labels[1]} ({arrows[1][1]} better)")
    if title:
        axes.set_title(textwrap.fill(title, 60), fontsize=9)
    axes.legend(handles, labels, fontsize=7)
    return _save(figure, path)
