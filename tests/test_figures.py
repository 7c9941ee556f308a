"""Figures: legends beside the data, Optuna's parallel coordinates with full parameter names, labels
that tell configurations apart, and files written whole or not at all."""

import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ncstudy.outputs import figures
from ncstudy.study.search import name_objective

LONG_NAMES = ["regularizer.lambda_between", "regularizer.lambda_within", "variant"]


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures the module saves, kept for inspection."""
    kept = []
    save = figures._save

    def keep(figure, path):
        kept.append(figure)
        return save(figure, path)

    monkeypatch.setattr(figures, "_save", keep)
    return kept


def legends(figure: Figure) -> list:
    return [axes.get_legend() for axes in figure.axes if axes.get_legend() is not None]


def assert_legends_cover_no_axes(figure: Figure) -> None:
    figure.draw_without_rendering()
    for legend in legends(figure):
        box = legend.get_window_extent()
        for axes in figure.axes:
            assert not box.overlaps(axes.bbox), f"legend {[t.get_text() for t in legend.get_texts()]} covers an axes"


def test_no_legend_covers_data(drawn, tmp_path):
    history = [{"epoch": e, "nc1": 1 / (e + 1), "nc2_equinorm": 0.1, "nc2_equiangle": 0.2, "nc2_maxangle": 0.3,
                "min_angle_deg": 80 + e, "min_angle_few_deg": 60 + e} for e in range(5)]  # fmt: skip
    figures.nc_curves(history, tmp_path / "nc.png")
    figures.norm_bars(np.linspace(2, 1, 10), {"many": [0, 1, 2], "medium": [3, 4, 5, 6], "few": [7, 8, 9]}, tmp_path / "n.png")
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    curves = {f"variant {i}": (counts, np.linspace(0.95, 0.1 * i, 10)) for i in range(4)}
    figures.accuracy_vs_count(curves, tmp_path / "acc.png")
    figures.metric_curves({f"variant {i}": ([0, 1, 2], [3.0 - i, 2.0, 1.0]) for i in range(4)}, "NC1", tmp_path / "m.png", log=True)
    assert len(drawn) == 4 and all(legends(figure) for figure in drawn)
    for figure in drawn:
        assert_legends_cover_no_axes(figure)


def optuna_study(trials: int = 8) -> optuna.Study:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    name_objective(study, "val_acc_all")

    def objective(trial):
        within = trial.suggest_float("regularizer.lambda_within", 1e-3, 1e-1, log=True)
        between = trial.suggest_float("regularizer.lambda_between", 0.0, 1.0)
        return within + between + (trial.suggest_categorical("variant", ["+ L_W", "+ L_B"]) == "+ L_W")

    study.optimize(objective, n_trials=trials)
    return study


def test_optuna_figures_show_full_parameter_names_and_keep_legends_off_the_data(drawn, tmp_path):
    written = figures.optuna_figures(optuna_study(), tmp_path)
    assert [p.name for p in written] == ["optuna_history.png", "optuna_importances.png", "optuna_parallel.png"]
    parallel = drawn[2].axes[0]
    labels = parallel.get_xticklabels()
    assert [label.get_text() for label in labels] == ["val_acc_all", *LONG_NAMES]
    assert all(label.get_rotation() == 30 for label in labels)
    assert drawn[0].axes[0].get_ylabel() == "val_acc_all"
    for figure in drawn:
        assert_legends_cover_no_axes(figure)
    assert legends(drawn[1])  # the importances plot has one, drawn inside by Optuna


def test_optuna_importances_leave_the_global_style_alone(tmp_path):
    import matplotlib

    figures._pyplot()
    with matplotlib.rc_context():
        matplotlib.style.use("default")  # whatever an earlier test left
        before = dict(matplotlib.rcParams)
        figures.optuna_figures(optuna_study(), tmp_path)
        assert dict(matplotlib.rcParams) == before


def test_a_figure_is_written_whole_or_not_at_all(monkeypatch, tmp_path):
    path = tmp_path / "norms.png"
    figures.norm_bars(np.ones(3), {"many": [0], "medium": [1], "few": [2]}, path)
    assert path.read_bytes().startswith(b"\x89PNG") and [p.name for p in tmp_path.iterdir()] == ["norms.png"]
    previous = path.read_bytes()

    def interrupted(self, fname, **kwargs):
        open(fname, "wb").write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        figures.norm_bars(np.ones(3), {"many": [0], "medium": [1], "few": [2]}, path)
    assert path.read_bytes() == previous and [p.name for p in tmp_path.iterdir()] == ["norms.png"]


def test_report_labels_tell_every_configuration_apart():
    from ncstudy.outputs.report import StudyResults, _labels

    trials = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e"], "status": "finished",
        "param.variant": ["+ L_W", "+ L_W", "+ L_W", "CE", "CE"],
        "param.data.imbalance.ratio": [10, 100, 100, 100, 100],
        "param.regularizer.lambda_within": [0.012341, 0.012341, 0.012349, math.nan, math.nan],
        "param.train.seed": [0, 0, 0, 0, 1],
    })  # fmt: skip
    labels = _labels(StudyResults("s", None, None, trials, pd.DataFrame()))
    assert labels.tolist() == [
        "+ L_W, ratio=10, lambda_within=0.012341", "+ L_W, ratio=100, lambda_within=0.012341",
        "+ L_W, ratio=100, lambda_within=0.012349", "CE, ratio=100, lambda_within=none", "CE, ratio=100, lambda_within=none",
    ]  # fmt: skip


def _is_whole(ticks) -> bool:
    return all(float(t).is_integer() for t in ticks)


def test_a_metric_measured_once_is_no_curve_and_epochs_are_ticked_whole(drawn, tmp_path):
    """One measurement per configuration (NC at the end only) draws no figure over epochs; two or more
    draw lines on whole-epoch ticks, never 2.85 ... 3.15."""
    once = {"a": ([3], [0.5]), "b": ([3], [0.6])}
    assert not figures.measured_twice(once)
    assert figures.metric_curves(once, "NC1", tmp_path / "once.png") is None and not (tmp_path / "once.png").exists()
    twice = {"a": ([2, 4], [0.6, 0.5]), "b": ([4], [0.7])}
    assert figures.measured_twice(twice)
    assert figures.metric_curves(twice, "NC1", tmp_path / "twice.png").exists()
    axes = drawn[-1].axes[0]
    assert _is_whole(axes.get_xticks()) and axes.get_xlabel() == "epoch"


def test_a_trial_measured_once_shows_markers_at_a_whole_epoch(drawn, tmp_path):
    """A trial's own nc_curves.png (always one of its three figures) with one measurement: markers at
    that epoch, whole-epoch ticks inside the shown range, and a title that says it was measured once."""
    history = [{"epoch": 3, "nc1": 0.5, "nc2_equinorm": 0.1, "nc2_equiangle": 0.2, "nc2_maxangle": 0.3, "min_angle_deg": 60.0}]
    figures.nc_curves(history, tmp_path / "nc.png")
    figure = drawn[-1]
    figure.draw_without_rendering()
    for axes in figure.axes:
        low, high = axes.get_xlim()
        shown = [t for t in axes.get_xticks() if low <= t <= high]
        assert shown and _is_whole(shown), shown
    assert "measured once, at epoch 3" in figure.texts[0].get_text()


def test_angle_heatmaps_name_classes_in_count_order_on_one_colour_scale(drawn, tmp_path):
    """Figure 2 of Liu et al.: the baseline beside the best, each titled by its configuration, classes
    named, most training images first, one colour scale (off-diagonal min to max over both panels)."""
    counts = [20, 50, 5]  # class 1 has the most images, then 0, then 2
    base = np.array([[0, 90, 30], [90, 0, 100], [30, 100, 0]], dtype=float)
    best = np.array([[0, 110, 80], [110, 0, 120], [80, 120, 0]], dtype=float)
    panels = {"baseline: CE": base, "best: + L_W & L_B": best}
    figures.angle_heatmaps(panels, counts, tmp_path / "angles.png", ["cat", "dog", "frog"])
    heatmaps = [axes for axes in drawn[-1].axes if axes.images and axes.get_title()]
    assert [axes.get_title() for axes in heatmaps] == ["baseline: CE", "best: + L_W & L_B"]
    for axes in heatmaps:
        assert [t.get_text() for t in axes.get_xticklabels()] == ["dog", "cat", "frog"]
        assert [t.get_text() for t in axes.get_yticklabels()] == ["dog", "cat", "frog"]
        assert axes.images[0].get_clim() == (30.0, 120.0)
    shown = heatmaps[0].images[0].get_array()
    assert shown[0, 1] == 90 and shown[0, 2] == 100 and shown[1, 2] == 30 and shown.mask[0, 0]  # dog-cat, dog-frog, cat-frog
    assert len(drawn[-1].axes) == 3  # the two panels and the colour bar they share


def _collapse_folder(folder, angle: float, counts) -> str:
    """A trial's checkpoint folder holding collapse.npz with every off-diagonal angle `angle`."""
    import json

    k = len(counts)
    folder.mkdir(parents=True)
    np.savez(folder / "collapse.npz", test_per_class_accuracy=np.full(k, 0.5), mean_norms=np.ones(k),
             angles_deg=angle * (1 - np.eye(k)), train_counts=np.asarray(counts), group_of=np.zeros(k, dtype=int),
             nc_history=np.asarray(json.dumps([])))  # fmt: skip
    return str(folder)


def test_the_report_draws_the_baseline_beside_the_best_titled_by_configuration(drawn, tmp_path):
    """A study with a variant that trains no term (CE) and a better one (NC): angles_best.png has the
    baseline's panel and the best's, titled by variant (never a Tune trial id), mean over seeds, with
    the digits' class names; with NC measured once the report says why there is no figure over epochs."""
    import yaml

    from ncstudy.config import load_study
    from ncstudy.outputs.report import build_report

    quickstart = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"
    variants = "search.variants={CE: {regularizer.lambda_within: 0.0, regularizer.lambda_between: 0.0}, NC: {}}"
    study = load_study(quickstart, ["name=fig2", "search.algorithm=grid", "search.space={}", variants])
    folder = tmp_path / "fig2"
    folder.mkdir()
    (folder / "study.yaml").write_text(yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False))
    counts = [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]
    rows = [{"trial_id": f"dfe82_0000{i}", "status": "finished", "param.variant": variant, "param.train.seed": seed,
             "val_acc_all": 0.5 + 0.1 * (variant == "NC"), "test_acc_all": 0.5, "test_acc_many": 0.5,
             "test_acc_medium": 0.5, "test_acc_few": 0.5, "train_nc1": 0.3,
             "checkpoint_path": _collapse_folder(tmp_path / f"t{i}", 60.0 + 20 * (variant == "NC") + seed, counts)}
            for i, (variant, seed) in enumerate([("CE", 0), ("CE", 1), ("NC", 0), ("NC", 1)])]  # fmt: skip
    pd.DataFrame(rows).to_parquet(folder / "trials.parquet")
    pd.DataFrame([{"trial_id": r["trial_id"], "epoch": 12, "train_nc1": 0.3} for r in rows]).to_parquet(folder / "epochs.parquet")
    build_report(["fig2"], tmp_path)
    angles = next(f for f in drawn if any(axes.get_title().startswith("best") for axes in f.axes))
    heatmaps = [axes for axes in angles.axes if axes.images and axes.get_title()]
    assert [axes.get_title() for axes in heatmaps] == ["baseline: CE (mean of 2 trials)", "best: NC (mean of 2 trials)"]
    assert [t.get_text() for t in heatmaps[0].get_xticklabels()] == [str(k) for k in range(10)]  # the digits' names
    assert heatmaps[0].images[0].get_clim() == heatmaps[1].images[0].get_clim() == (60.5, 80.5)
    report = (folder / "report.md").read_text()
    assert "measured NC once per trial (epoch 12 of 12), so it has no figures over epochs" in report
    assert not (folder / "figures" / "nc1_over_epochs.png").exists()


def test_an_ablation_grid_s_baseline_is_the_one_on_the_best_s_ratio(drawn, tmp_path):
    """Variants x a grid of ratios (the Table 7 ablation): two configurations train no term (CE at
    r=10 and r=100); the heatmap's baseline is the one trained on the best's ratio (fails when the
    baseline was looked for across ratios: none was unique, and the best was drawn alone)."""
    import yaml

    from ncstudy.config import load_study
    from ncstudy.outputs.report import build_report

    quickstart = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"
    variants = "search.variants={CE: {regularizer.lambda_within: 0.0, regularizer.lambda_between: 0.0}, NC: {}}"
    ratios = "search.space={data.imbalance.ratio: {type: grid, values: [10, 100]}}"
    study = load_study(quickstart, ["name=grid2", "search.algorithm=grid", ratios, variants])
    folder = tmp_path / "grid2"
    folder.mkdir()
    (folder / "study.yaml").write_text(yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False))
    counts = [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]
    cases = [("CE", 10, 0.6), ("NC", 10, 0.7), ("CE", 100, 0.4), ("NC", 100, 0.45)]
    rows = [{"trial_id": f"ab_{i}", "status": "finished", "param.variant": variant, "param.data.imbalance.ratio": ratio,
             "val_acc_all": score, "test_acc_all": 0.5, "test_acc_many": 0.5, "test_acc_medium": 0.5,
             "test_acc_few": 0.5, "train_nc1": 0.3,
             "checkpoint_path": _collapse_folder(tmp_path / f"t{i}", 50.0 + 10 * i, counts)}
            for i, (variant, ratio, score) in enumerate(cases)]  # fmt: skip
    pd.DataFrame(rows).to_parquet(folder / "trials.parquet")
    pd.DataFrame([{"trial_id": r["trial_id"], "epoch": 12, "train_nc1": 0.3} for r in rows]).to_parquet(folder / "epochs.parquet")
    build_report(["grid2"], tmp_path)
    angles = next(f for f in drawn if any(axes.get_title().startswith("best") for axes in f.axes))
    titles = [axes.get_title() for axes in angles.axes if axes.images and axes.get_title()]
    assert len(titles) == 2 and titles[0].startswith("baseline: CE") and "10" in titles[0] and "100" not in titles[0], titles
