"""The report of a multi-objective study (search.objectives): per stratum and variant the front table,
the hypervolume table with its reading against a baseline variant, the Pareto figure, Optuna's
Pareto front in place of its single-objective history; and a study of one objective gets none of
them. From a synthetic study folder (study.yaml + trials.parquet, as a copied study holds them)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from ncstudy.config import load_study
from ncstudy.outputs import figures
from ncstudy.outputs.report import build_report

ABLATION = Path(__file__).resolve().parents[1] / "studies" / "ablation_cifar10_lt_cpu.yaml"
OBJECTIVES = "search.objectives={val_acc_many: max, val_acc_few: max}"
STRATA = "search.strata={data.imbalance.ratio: [10, 100]}"
# per variant, four configurations (lambda_W) at these validation means (many, few); on the front:
# CE-DRW's first two, + L_W & L_B's first three (the others are dominated by a front point)
MEANS = {
    "CE-DRW": [(0.90, 0.10), (0.80, 0.20), (0.70, 0.15), (0.60, 0.05)],
    "+ L_W & L_B": [(0.92, 0.15), (0.85, 0.30), (0.70, 0.35), (0.50, 0.20)],
}
FRONT = {("CE-DRW", 0.01), ("CE-DRW", 0.02), ("+ L_W & L_B", 0.01), ("+ L_W & L_B", 0.02), ("+ L_W & L_B", 0.03)}


def _study_folder(tmp_path: Path, overrides: list[str]):
    study = load_study(ABLATION, ["name=pareto", *overrides])
    folder = tmp_path / study.name
    folder.mkdir()
    (folder / "study.yaml").write_text(yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False))
    return study, folder


def _rows(ratio: int = 100, seeds=(0, 1), same: bool = False) -> list[dict]:
    """2 variants x 4 configurations x `seeds`; test = validation - 2 points (many), - 1 point (few),
    seeds 1 point apart; `same`: + L_W & L_B at CE-DRW's means."""
    rows = []
    for variant, means in MEANS.items():
        for c, (many, few) in enumerate(MEANS["CE-DRW"] if same else means):
            for seed in seeds:
                shift = 0.01 * (seed - np.mean(seeds))
                rows.append({
                    "trial_id": f"{ratio}-{variant}-{c}-{seed}", "status": "finished", "param.variant": variant,
                    "param.regularizer.lambda_within": 0.01 * (c + 1), "param.data.imbalance.ratio": ratio,
                    "param.train.seed": seed, "val_acc_all": 0.5, "val_acc_many": many + shift, "val_acc_few": few - shift,
                    "test_acc_all": 0.5, "test_acc_many": many - 0.02 + shift, "test_acc_medium": 0.4,
                    "test_acc_few": few - 0.01 + shift, "classes_many": 3, "classes_medium": 4, "classes_few": 3,
                })  # fmt: skip
    return rows


def test_the_report_gives_each_variants_front_its_hypervolume_and_the_difference(tmp_path):
    study, folder = _study_folder(tmp_path, [OBJECTIVES])
    pd.DataFrame(_rows()).to_parquet(folder / "trials.parquet")
    build_report([study.name], tmp_path, baseline="CE-DRW")
    report = (folder / "report.md").read_text()
    assert "Objectives: `val_acc_many` (max), `val_acc_few` (max) on the validation split" in report
    front = pd.read_csv(folder / "tables" / "front.csv")
    rows = set(zip(front["param.variant"], front["param.regularizer.lambda_within"].round(6)))
    assert rows == FRONT
    assert front["param.variant"].tolist() == ["CE-DRW"] * 2 + ["+ L_W & L_B"] * 3  # by variant, then ...
    assert front.groupby("param.variant", sort=False)["val_acc_many_mean"].apply(lambda s: s.is_monotonic_decreasing).all()
    assert front["test_acc_few_mean"].tolist() == pytest.approx([0.09, 0.19, 0.14, 0.29, 0.34])
    assert {"recipe", "test_acc_all_std", "n"} <= set(front.columns) and (front["n"] == 2).all()
    volume = pd.read_csv(folder / "tables" / "hypervolume.csv").set_index("param.variant")
    # CE-DRW's test front (88, 9), (78, 19): 0.88 * 0.09 + 0.78 * 0.10; + L_W & L_B's (90, 14), (83, 29), (68, 34)
    assert volume.loc["CE-DRW", "hypervolume"] == pytest.approx(100 * (0.88 * 0.09 + 0.78 * 0.10))
    assert volume.loc["+ L_W & L_B", "hypervolume"] == pytest.approx(100 * (0.90 * 0.14 + 0.83 * 0.15 + 0.68 * 0.05))
    assert volume["front"].tolist() == [2, 3] and volume["configurations"].tolist() == [4, 4]
    difference = volume.loc["+ L_W & L_B"]
    assert difference["difference_low"] > 0 and np.isnan(volume.loc["CE-DRW", "difference"])
    assert f"`+ L_W & L_B` moves the front by {difference['difference']:+.1f} [" in report
    assert "hypervolume points over `CE-DRW`." in report
    assert "reference point to the ideal point (test_acc_many 0% -> 100%; test_acc_few 0% -> 100%)" in report
    assert "resampling seeds within each configuration" in report
    for name in ("front", "hypervolume"):
        assert all((folder / "tables" / f"{name}.{ext}").exists() for ext in ("md", "tex", "csv")), name
    assert "\\textbf{" in (folder / "tables" / "hypervolume.tex").read_text()  # the interval excludes 0
    assert (folder / "figures" / "pareto.png").exists() and "](figures/pareto.png)" in report
    assert not (folder / "figures" / "angles_best.png").exists() and "Best configuration" not in report
    assert "no paired differences" in report and not (folder / "tables" / "differences.csv").exists()


def test_each_stratum_has_its_fronts_figure_and_reading(tmp_path):
    """Two strata: + L_W & L_B far out at r=10; at r=100 at CE-DRW's means, apart only by the seeds'
    spread; the sentence says which."""
    study, folder = _study_folder(tmp_path, [OBJECTIVES, STRATA])
    rows = _rows(ratio=10) + _rows(ratio=100, seeds=(0, 1, 2), same=True)
    pd.DataFrame(rows).to_parquet(folder / "trials.parquet")
    build_report([study.name], tmp_path, baseline="CE-DRW")
    report = (folder / "report.md").read_text()
    assert "In `data.imbalance.ratio=10`: `+ L_W & L_B` moves the front by +" in report
    assert "In `data.imbalance.ratio=100`: `+ L_W & L_B` differs from `CE-DRW` by " in report
    assert "within the seed spread." in report
    volume = pd.read_csv(folder / "tables" / "hypervolume.csv")
    assert volume["param.data.imbalance.ratio"].tolist() == [10, 10, 100, 100]
    assert volume.loc[3, "difference_low"] < 0 < volume.loc[3, "difference_high"]
    ratios = pd.read_csv(folder / "tables" / "front.csv")["param.data.imbalance.ratio"].tolist()
    assert ratios == sorted(ratios) and ratios.count(10) == 5  # grouped by stratum, ascending
    for ratio in (10, 100):
        assert (folder / "figures" / f"pareto_ratio={ratio}.png").exists()
    assert "best_by_stratum" not in report and not (folder / "figures" / "best_by_stratum.png").exists()


def test_one_seed_per_configuration_is_not_judged(tmp_path):
    study, folder = _study_folder(tmp_path, [OBJECTIVES])
    pd.DataFrame(_rows(seeds=(0,))).to_parquet(folder / "trials.parquet")
    build_report([study.name], tmp_path, baseline="CE-DRW")
    report = (folder / "report.md").read_text()
    assert "with one seed per configuration: no seed spread to judge it by." in report
    assert "moves the front" not in report
    volume = (folder / "tables" / "hypervolume.md").read_text()
    assert "+12.7 [+12.7, +12.7]" in volume and "**" not in volume  # a one-point interval excludes nothing


def test_without_a_baseline_the_report_says_how_to_compare_the_fronts(tmp_path):
    study, folder = _study_folder(tmp_path, [OBJECTIVES])
    pd.DataFrame(_rows()).to_parquet(folder / "trials.parquet")
    build_report([study.name], tmp_path)
    report = (folder / "report.md").read_text()
    assert "--baseline CE-DRW` compares each variant's front with `CE-DRW`'s." in report
    assert "vs " not in (folder / "tables" / "hypervolume.md").read_text()


def test_a_study_of_one_objective_has_no_front(tmp_path):
    study, folder = _study_folder(tmp_path, [])
    pd.DataFrame(_rows()).to_parquet(folder / "trials.parquet")
    build_report([study.name], tmp_path)
    report = (folder / "report.md").read_text()
    assert "Objective: `val_acc_all` (max)" in report and "Pareto" not in report
    assert not list(folder.glob("tables/front.*")) and not list(folder.glob("figures/pareto*"))


def _optuna_study(storage: str, name: str) -> optuna.Study:
    """A real multi-objective Optuna study as the search keeps it: two maximised objectives, named."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_acc_many", "val_acc_few"])

    def objective(trial):
        within = trial.suggest_float("regularizer.lambda_within", 1e-3, 1e-1, log=True)
        between = trial.suggest_float("regularizer.lambda_between", 0.0, 1.0)
        return 0.9 - between / 2 + within, 0.1 + between / 2

    study.optimize(objective, n_trials=8)
    return study


def test_a_multi_objective_optuna_study_gives_its_pareto_front_named_by_the_objectives(monkeypatch, tmp_path):
    """Optuna's history needs one objective (it raises without a `target`): the Pareto front takes its
    place; importances and parallel coordinates take every objective, named."""
    drawn, save = {}, figures._save

    def kept(figure, path: Path) -> Path:
        drawn[path.name] = figure
        return save(figure, path)

    monkeypatch.setattr(figures, "_save", kept)
    study, folder = _study_folder(tmp_path, [OBJECTIVES])
    pd.DataFrame(_rows()).to_parquet(folder / "trials.parquet")
    _optuna_study(f"sqlite:///{folder / 'optuna.db'}", study.name)
    build_report([study.name], tmp_path)
    names = sorted(p.name for p in (folder / "figures").glob("optuna_*.png"))
    assert names == ["optuna_importances.png", "optuna_parallel.png", "optuna_pareto_front.png"]
    assert "](figures/optuna_pareto_front.png)" in (folder / "report.md").read_text()
    front = drawn["optuna_pareto_front.png"].axes[0]
    assert (front.get_xlabel(), front.get_ylabel()) == ("val_acc_many", "val_acc_few")
    labels = [label.get_text() for label in drawn["optuna_parallel.png"].axes[0].get_xticklabels()]
    assert labels == ["val_acc_many", "val_acc_few", "regularizer.lambda_between", "regularizer.lambda_within"]
    legend = drawn["optuna_importances.png"].axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["val_acc_many", "val_acc_few"]
