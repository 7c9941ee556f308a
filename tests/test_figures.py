"""Figures: legends beside the data, Optuna's parallel coordinates with full parameter names, labels
that tell configurations apart, and files written whole or not at all."""

import math

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
