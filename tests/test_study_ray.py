"""End to end through real Ray Tune + Optuna + Ray Train + MLflow: a 2-trial, 2-epoch study."""

import math
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from processes import stage_a_replaced_checkpoint

from ncstudy.config import load_study
from ncstudy.study.driver import run_study
from ncstudy.study.stale_checkpoints import restore_named_checkpoints
from ncstudy.study.tracking import short_value

QUICKSTART = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"


@pytest.fixture(scope="module")
def finished_study(ray_session, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    study = load_study(
        QUICKSTART,
        ["name=integration", "train.epochs=2", "search.num_samples=2", "search.max_concurrent=2", "model.width=8",
         "metrics.every=1"],
    )
    outcome = run_study(study, results)
    return study, results, outcome


def test_trials_and_epochs_tables(finished_study):
    study, results, outcome = finished_study
    assert outcome.finished == 2 and outcome.failed == [] and outcome.complete
    trials = pd.read_parquet(results / "integration" / "trials.parquet")
    assert len(trials) == 2
    for column in ("test_acc_all", "test_acc_many", "test_acc_medium", "test_acc_few", "val_acc_all", "train_nc1", "train_min_angle_deg", "train_nc3", "train_nc4",
                   "test_nc1", "train_nc1_few", "train_min_angle_many_few_deg", "test_ece_all", "val_balanced_acc",
                   "param.regularizer.lambda_within", "param.data.imbalance.ratio", "data_fingerprint"):  # fmt: skip
        assert column in trials, column
    for value in trials[["test_acc_all", "val_acc_all"]].to_numpy().ravel():
        assert 0.0 <= value <= 1.0
    low, high = study.search.space["regularizer.lambda_within"].low, study.search.space["regularizer.lambda_within"].high
    assert trials["param.regularizer.lambda_within"].between(low, high).all()
    epochs = pd.read_parquet(results / "integration" / "epochs.parquet")
    assert sorted(epochs.groupby("trial_id")["epoch"].apply(list).tolist()) == [[1, 2], [1, 2]]  # completed epochs
    saved = yaml.safe_load((results / "integration" / "study.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["search"]["num_samples"] == 2


def test_mlflow_has_one_parent_and_a_finished_child_per_trial(finished_study):
    _, results, outcome = finished_study
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("integration")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    trials = pd.read_parquet(results / "integration" / "trials.parquet")
    assert sorted(c.info.run_id for c in children) == sorted(trials["mlflow_run_id"])
    assert all(c.info.status == "FINISHED" for c in children)
    history = client.get_metric_history(children[0].info.run_id, "val_acc_all")
    assert [m.step for m in history] == [1, 2]
    assert "regularizer.lambda_within" in children[0].data.params
    # comparable in the UI: runs named by their searched values, the data set as an input, the best on the parent
    row = trials.set_index("mlflow_run_id").loc[children[0].info.run_id]
    ratio, within = row["param.data.imbalance.ratio"], row["param.regularizer.lambda_within"]
    assert children[0].info.run_name.startswith(f"r={short_value(ratio)} λW={short_value(within)} ")
    (dataset,) = children[0].inputs.dataset_inputs
    assert dataset.dataset.digest == row["data_fingerprint"] and dataset.dataset.name.startswith("digits")
    best = trials["val_acc_all"].max()
    assert parents[0].data.metrics["best_val_acc_all"] == pytest.approx(best)
    assert parents[0].data.tags["best.trial_id"] in set(trials["trial_id"])
    assert "worker_nodes" not in children[0].data.params and "worker_nodes" in children[0].data.tags
    assert {"report.md", "trials.parquet", "study.yaml"} <= {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    figures = {a.path for a in client.list_artifacts(children[0].info.run_id, "figures")}
    assert figures == {"figures/angles.png", "figures/norms.png", "figures/nc_curves.png"}
    nc1 = client.get_metric_history(children[0].info.run_id, "train_nc1")
    assert [m.step for m in nc1] == [1, 2] and all(m.value > 0 for m in nc1)  # metrics.every=1 below


def test_report_has_the_many_medium_few_table(finished_study):
    _, results, _ = finished_study
    report = (results / "integration" / "report.md").read_text()
    assert "| All | Many (3) | Medium (4) | Few (3) | n |" in report
    trials = pd.read_parquet(results / "integration" / "trials.parquet")
    best = trials.sort_values("val_acc_all", ascending=False).iloc[0]
    table = report[report.index("### Head / medium / tail") :]
    first_row = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()][0]
    expected = "-" if math.isnan(best["test_acc_few"]) else f"{100 * best['test_acc_few']:.1f}"
    assert f"{best['param.regularizer.lambda_within']:.4g}" in first_row and expected in first_row


def test_running_the_same_study_again_is_refused(finished_study):
    from ncstudy.errors import StudyError

    study, results, _ = finished_study
    with pytest.raises(StudyError, match="resume integration"):
        run_study(study, results)


def test_an_unschedulable_trial_is_refused_before_anything_is_written(ray_session, tmp_path):
    from ncstudy.errors import StudyError

    study = load_study(QUICKSTART, ["name=nogpu", "resources.gpus_per_worker=0.5"])
    with pytest.raises(StudyError, match="needs 1 CPU and 0.5 GPU.*gpus_per_worker=0"):
        run_study(study, tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_report_writes_every_format_and_figure_and_marks_unfinished_trials(finished_study, tmp_path):

    from ncstudy.outputs.report import build_report

    _, results, _ = finished_study
    folder = results / "integration"
    for name in ("shot", "nc", "nc_groups"):
        for suffix in (".md", ".tex", ".csv"):
            assert (folder / "tables" / f"{name}{suffix}").exists(), name + suffix
    assert "\\toprule" in (folder / "tables" / "shot.tex").read_text()
    figures = {p.name for p in (folder / "figures").glob("*.png")}
    assert {"accuracy_vs_count.png", "nc1_over_epochs.png", "angles_best.png", "norms_best.png", "optuna_history.png"} <= figures

    # a study cut short, copied without Tune's saved state: one trial reported its first epoch only
    copy = tmp_path / "results"
    shutil.copytree(folder, copy / "integration", ignore=shutil.ignore_patterns("train", "experiment_state-*"))
    reports = sorted((copy / "integration" / "reports").glob("*.jsonl"))[0]
    reports.write_text(reports.read_text().splitlines()[0] + "\n")
    report = (build_report(["integration"], copy) / "report.md").read_text()
    assert "1 trials finished of 2 started" in report and f"Unfinished, not in the tables: {reports.stem} (1/2 epochs)" in report


def test_ncstudy_train_gives_the_per_epoch_metrics_of_the_single_worker_ray_trial(finished_study, tmp_path):
    """The same configuration and seed through `ncstudy train` (the engine in one process, no Ray) and
    through the study's Ray Train trial give the same per-epoch numbers. The trial's worker runs with
    OMP_NUM_THREADS = its CPUs (Ray sets it), so the subprocess does too: the same thread count makes
    the same floating-point sums."""
    import os
    import subprocess
    import sys

    study, results, _ = finished_study
    trials = pd.read_parquet(results / "integration" / "trials.parquet")
    trial = trials.iloc[0]
    values = {column.removeprefix("param."): trial[column] for column in trials if column.startswith("param.")}
    params = [f"{key}={yaml_value(value)}" for key, value in values.items()]
    overrides = ["name=single", "train.epochs=2", "model.width=8", "metrics.every=1", *params]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, int(study.resources.cpus_per_worker)))}
    command = [sys.executable, "-m", "ncstudy", "train", str(QUICKSTART), "--no-tracking", "--results", str(tmp_path)]
    done = subprocess.run([*command, *(a for o in overrides for a in ("--set", o))], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    ray_epochs = pd.read_parquet(results / "integration" / "epochs.parquet")
    ray_epochs = ray_epochs[ray_epochs["trial_id"] == trial["trial_id"]].set_index("epoch").sort_index()
    single = pd.read_parquet(tmp_path / "single" / "epochs.parquet").set_index("epoch").sort_index()
    compared = ["loss", "loss_sup", "loss_within", "loss_between", "val_acc_all", "val_loss", "val_ece_all",
                "train_nc1", "train_min_angle_deg", "test_acc_all", "test_acc_few", "test_nc1"]  # fmt: skip
    assert single.index.tolist() == ray_epochs.index.tolist() == [1, 2]
    pd.testing.assert_frame_equal(single[compared], ray_epochs[compared], rtol=1e-6, atol=1e-9)


def yaml_value(value) -> str:
    """A trials.parquet value as --set reads it: numpy scalars as Python's, NaN (a None) as null."""
    value = getattr(value, "item", lambda: value)()
    return "null" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(value)


@pytest.mark.slow  # 80 s on 2 cores: a Ray Train worker group
def test_a_two_worker_ray_train_trial_gives_the_numbers_of_one_worker_with_the_global_batch(ray_session, tmp_path):
    """Worker-count invariance end to end (docs/design.md, "Worker-count invariance"): one
    configuration as a 2-worker Ray Train trial (DDP over gloo, 32 images per worker a step,
    GlobalBatchNorm, the regularizers' global-batch sums) and through `ncstudy train` (one process,
    64 images a step). 276 training images (ratio 50), so no worker drops an image. Stated tolerance:
    every loss term, validation and test loss, and NC metric to a relative 1e-4 (gloo's all-reduce
    and DDP's average sum in another order than one process: float32 differences of about 1e-6 a
    step, grown over 2 epochs); accuracies to one image of their split."""
    import os
    import subprocess
    import sys

    overrides = ["train.epochs=2", "model.width=8", "metrics.every=1", "data.imbalance.ratio=50", "search.algorithm=grid",
                 "search.space={}", "search.num_samples=1"]  # fmt: skip
    study = load_study(QUICKSTART, [*overrides, "name=ddp2", "train.batch_size=32", "resources.num_workers=2",
                                    "resources.cpus_per_worker=1", "resources.max_failures=0"])  # fmt: skip
    outcome = run_study(study, tmp_path / "ray")
    assert outcome.finished == 1, outcome
    ray_epochs = pd.read_parquet(tmp_path / "ray" / "ddp2" / "epochs.parquet").set_index("epoch").sort_index()
    assert ray_epochs["world_size"].tolist() == [2, 2]
    # The driver logged the trial's run from rank 0's reports and drew its figures from Train's checkpoint.
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'ray' / 'mlflow.db'}")
    (child,) = client.search_runs([client.get_experiment_by_name("ddp2").experiment_id], "tags.`mlflow.parentRunId` != ''")
    assert child.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "loss")] == [1, 2]
    assert len(client.list_artifacts(child.info.run_id, "figures")) == 3
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as each Train worker (cpus_per_worker 1)
    command = [sys.executable, "-m", "ncstudy", "train", str(QUICKSTART), "--no-tracking", "--results", str(tmp_path / "one")]
    settings = [*overrides, "name=one", "train.batch_size=64"]
    done = subprocess.run([*command, *(a for o in settings for a in ("--set", o))], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    one = pd.read_parquet(tmp_path / "one" / "one" / "epochs.parquet").set_index("epoch").sort_index()
    assert one["num_train"].tolist() == [276, 276] and one["world_size"].tolist() == [1, 1]
    continuous = ["loss", "loss_sup", "loss_within", "loss_between", "val_loss", "test_loss", "train_nc1",
                  "train_min_angle_deg", "test_nc1"]  # fmt: skip
    pd.testing.assert_frame_equal(ray_epochs[continuous], one[continuous], rtol=1e-4, atol=1e-7)
    for split, images in (("val", 200), ("test", 500)):
        difference = (ray_epochs[f"{split}_acc_all"] - one[f"{split}_acc_all"]).abs().max()
        assert difference <= 1 / images + 1e-9, (split, difference)


def test_a_checkpoint_the_saved_state_names_is_given_back_before_resume(finished_study, tmp_path):
    """Read from Ray Tune's real experiment state: each trial's named checkpoint is found, and a newer
    one takes its name when it is missing (ncstudy.study.stale_checkpoints)."""
    _, results, _ = finished_study
    experiment = shutil.copytree(results / "integration" / "ray" / "tune", tmp_path / "tune")
    assert restore_named_checkpoints(experiment) == []  # a consistent state is left alone
    named = stage_a_replaced_checkpoint(experiment)
    assert len(named) == 2 and not any(path.exists() for path in named)
    lines = restore_named_checkpoints(experiment)
    assert len(lines) == 2 and all("it resumes from checkpoint_" in line for line in lines)
    assert all(path.exists() and (path / "collapse.npz").exists() for path in named)
