"""The study engine through real Ray: grid x variants x seeds, Optuna with seeds, ASHA, reproducibility."""

import time
from pathlib import Path

import pandas as pd
import pytest

from ncstudy.config import load_study
from ncstudy.study.driver import run_study

QUICKSTART = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"
TINY = ["model.width=4", "model.feature_dim=16", "metrics.every=0", "search.max_concurrent=2"]


def test_grid_of_variants_and_seeds_runs_every_combination_once(ray_session, tmp_path):
    study = load_study(QUICKSTART, [*TINY, "name=grid", "train.epochs=1", "search.algorithm=grid", "search.space={}",
        "search.seeds=[0, 1]",
        "search.variants={CE: {regularizer.lambda_within: 0.0, regularizer.lambda_between: 0.0}, NC: {}}"])  # fmt: skip
    outcome = run_study(study, tmp_path)
    trials = pd.read_parquet(tmp_path / "grid" / "trials.parquet")
    assert outcome.finished == 4
    assert sorted(zip(trials["param.variant"], trials["param.train.seed"])) == [("CE", 0), ("CE", 1), ("NC", 0), ("NC", 1)]
    epochs = pd.read_parquet(tmp_path / "grid" / "epochs.parquet").merge(trials[["trial_id", "param.variant"]])
    assert (epochs[epochs["param.variant"] == "CE"]["loss_within"] == 0).all()
    assert (epochs[epochs["param.variant"] == "NC"]["loss_within"] > 0).all()


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)], ids=["single-worker", "ray-train"])
def test_optuna_with_seeds_and_asha_completes_and_releases_workers(ray_session, tmp_path, workers):
    """On both paths a trial can take: ASHA stops a single-worker trial at a `tune.report` in its
    trial actor, a 2-worker trial inside Ray Train's fit."""
    import ray

    study = load_study(QUICKSTART, [*TINY, "name=asha", "train.epochs=4", "search.num_samples=2", "search.seeds=[0, 1]",
                                    "search.asha={grace_period: 1, reduction_factor: 2}", f"resources.num_workers={workers}"])  # fmt: skip
    outcome = run_study(study, tmp_path)
    epochs = pd.read_parquet(tmp_path / "asha" / "epochs.parquet")
    per_trial = epochs.groupby("trial_id")["epoch"].max()
    assert len(per_trial) == 4 and outcome.failed == [] and outcome.complete  # stopped trials ended as planned
    assert (per_trial < 4).any(), "ASHA stopped no trial early"
    trials = pd.read_parquet(tmp_path / "asha" / "trials.parquet")
    assert sorted(trials["param.train.seed"].tolist()) == [0, 0, 1, 1]
    assert trials.groupby("param.regularizer.lambda_within")["param.train.seed"].apply(sorted).tolist() == [[0, 1], [0, 1]]
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("asha").experiment_id])
    assert all(r.info.status == "FINISHED" for r in runs), [r.info.status for r in runs]
    deadline = time.monotonic() + 60  # actors are torn down asynchronously after the study returns
    while ray.available_resources().get("CPU", 0) < 2.0 and time.monotonic() < deadline:
        time.sleep(1)
    assert ray.available_resources().get("CPU", 0) == pytest.approx(2.0)  # every worker released


def test_same_seeds_give_identical_metrics(ray_session, tmp_path):
    overrides = [*TINY, "train.epochs=2", "search.num_samples=2"]
    frames = []
    for run in ("first", "second"):
        run_study(load_study(QUICKSTART, [*overrides, f"name={run}"]), tmp_path)
        trials = pd.read_parquet(tmp_path / run / "trials.parquet")
        frames.append(trials.drop(columns=["trial_id", "mlflow_run_id", "epoch_time_s"]).sort_values("param.regularizer.lambda_within").reset_index(drop=True))
    numeric = frames[0].select_dtypes("number").columns
    pd.testing.assert_frame_equal(frames[0][numeric], frames[1][numeric])


def test_a_trial_that_raises_is_recorded_as_failed_and_the_study_goes_on(ray_session, tmp_path):
    import mlflow

    study = load_study(QUICKSTART, [*TINY, "name=failing", "train.epochs=2", "search.algorithm=grid", "search.space={}",
        "search.variants={ok: {}, diverges: {train.lr: 1.0e+12, train.warmup_epochs: 0}}"])  # fmt: skip
    outcome = run_study(study, tmp_path)
    assert outcome.finished == 1 and [trial_id for trial_id, _, _ in outcome.failed] == [outcome.failed[0][0]]
    assert "the trial diverged in epoch 1" in outcome.failed[0][2] and not outcome.complete  # the error's last line
    assert f"Failed, not in the tables: {outcome.failed[0][0]} (0/2 epochs: " in (tmp_path / "failing" / "report.md").read_text()
    trials = pd.read_parquet(tmp_path / "failing" / "trials.parquet")
    assert trials["param.variant"].tolist() == ["ok"]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("failing").experiment_id])
    statuses = sorted(r.info.status for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert statuses == ["FAILED", "FINISHED"]
    assert [r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags] == ["FAILED"]
