"""search.strata end to end through real Ray Tune + Optuna + Ray Train + MLflow: the quick start on
digits with one search per imbalance ratio (2 strata x 2 configurations, 1 epoch each), under ASHA
with rungs per stratum."""

from pathlib import Path

import mlflow
import optuna
import pandas as pd

from ncstudy.config import load_study
from ncstudy.study.driver import run_study

QUICKSTART = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"


def test_a_stratified_study_runs_its_budget_per_stratum_and_reports_the_best_of_each(ray_session, tmp_path):
    results = tmp_path / "results"
    study = load_study(
        QUICKSTART,
        ["name=strata", "train.epochs=1", "train.warmup_epochs=0", "train.milestones=[]", "search.num_samples=2",
         "search.max_concurrent=2", "resources.cpus_per_worker=1", "model.width=8", "metrics.every=0",
         "search.space={regularizer.lambda_within: {type: loguniform, low: 0.001, high: 0.1}, "
         "regularizer.lambda_between: {type: loguniform, low: 0.01, high: 1.0}}",
         "search.strata={data.imbalance.ratio: [10, 50]}",
         "search.asha={grace_period: 1, reduction_factor: 2}"],  # StratifiedASHA reads each trial's stratum
    )  # fmt: skip
    outcome = run_study(study, results)
    assert outcome.planned == 4 and outcome.finished == 4 and outcome.complete, outcome
    folder = results / "strata"
    trials = pd.read_parquet(folder / "trials.parquet")
    assert trials["param.data.imbalance.ratio"].value_counts().to_dict() == {10: 2, 50: 2}
    # each stratum is its own Optuna study, holding its own two trials
    storage = f"sqlite:///{folder / 'optuna.db'}"
    for ratio in (10, 50):
        optuna_trials = optuna.load_study(study_name=f"strata[data.imbalance.ratio={ratio}]", storage=storage).trials
        mine = trials[trials["param.data.imbalance.ratio"] == ratio]
        assert sorted(t.params["regularizer.lambda_within"] for t in optuna_trials) == sorted(
            mine["param.regularizer.lambda_within"]
        )
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in optuna_trials)
    # MLflow: each child run has its stratum as a param
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    by_run = trials.set_index("mlflow_run_id")["param.data.imbalance.ratio"]
    for run_id, ratio in by_run.items():
        assert float(client.get_run(run_id).data.params["data.imbalance.ratio"]) == ratio
    # the study's run: one best per stratum, never one across strata
    parent = client.get_run(client.get_run(by_run.index[0]).data.tags["mlflow.parentRunId"]).data
    for ratio in (10, 50):
        mine = trials[trials["param.data.imbalance.ratio"] == ratio]
        assert parent.metrics[f"ratio_{ratio}/best_val_acc_all"] == mine["val_acc_all"].max()
        assert parent.tags[f"ratio_{ratio}/best.trial_id"] in set(mine["trial_id"])
    assert "best_val_acc_all" not in parent.metrics
    # the report: the best configuration per stratum, chosen within the stratum, and its figure
    report = (folder / "report.md").read_text()
    section = report[report.index("### Best configuration per stratum") :]
    section = section[: section.index("### Head")]
    lines = [line.strip("| ").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    header, rows = lines[0], [dict(zip(lines[0], cells)) for cells in lines[2:]]
    assert header[0] == "data.imbalance.ratio" and [row["data.imbalance.ratio"] for row in rows] == ["10", "50"]
    for ratio, row in zip((10, 50), rows):
        mine = trials[trials["param.data.imbalance.ratio"] == ratio]
        best = mine[mine["val_acc_all"] == mine["val_acc_all"].max()]  # ties: any of them
        assert row["regularizer.lambda_within"] in {f"{v:.4g}" for v in best["param.regularizer.lambda_within"]}, row
        assert row["val_acc_all (val)"] == f"{100 * mine['val_acc_all'].max():.1f}", row
    assert (folder / "figures" / "best_by_stratum.png").exists()
    assert "figures/best_by_stratum.png" in report
