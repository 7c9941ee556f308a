"""The driver's Tune callback that logs each trial's MLflow run (ncstudy.study.trial_runs), on a real
sqlite store and a real study folder, with Tune's trials stood in for by the attributes it reads
(path, trial_id, config, last_result): the whole study path runs it in tests/test_study_ray.py."""

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest

from ncstudy.config import dump_yaml, load_study
from ncstudy.engine.checkpoint_files import COLLAPSE_FILE
from ncstudy.outputs.study_folder import study_paths, write_tracking
from ncstudy.study.tracking import PARENT_TAG, TRIAL_TAG, study_tracker
from ncstudy.study.trial_runs import TrialRuns

ROOT = Path(__file__).resolve().parents[1]
TUNE_KEYS = {"time_this_iter_s": 0.5, "training_iteration": 1, "done": False, "pid": 7, "hostname": "h", "config": {}}


@pytest.fixture
def study_folder(tmp_path):
    """A study folder as the driver leaves it before the search: study.yaml and its parent run recorded."""
    study = load_study(ROOT / "studies" / "quickstart.yaml", ["name=runs", "search.seeds=[0, 1]"])
    paths = study_paths(tmp_path, study.name)
    paths.folder.mkdir()
    paths.config_file.write_text(dump_yaml(study))
    tracker = study_tracker(study, paths.results)
    parent = tracker.start_study(study.name, study.model_dump(mode="json"), paths.config_file)
    write_tracking(paths, parent, None)
    return paths, tracker, parent


def _trial(paths, trial_id: str, config: dict, last_result: dict | None = None):
    path = paths.tune_experiment / f"run_single_worker_trial_{trial_id}_0_x"
    path.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(path=str(path), trial_id=trial_id, config=config, last_result=last_result or {})


def _final_checkpoint(trial) -> str:
    """A final checkpoint folder in the trial's folder, holding collapse.npz as the engine writes it."""
    name = "checkpoint_000001"
    folder = Path(trial.path) / name
    folder.mkdir()
    k = 10
    history = [{"epoch": e, "nc1": 1.0 / (e + 1), "nc2_equinorm": 0.3, "min_angle_deg": 80.0} for e in (1, 2)]
    np.savez(
        folder / COLLAPSE_FILE, test_per_class_accuracy=np.linspace(0, 1, k), mean_norms=np.ones(k),
        angles_deg=np.full((k, k), 90.0), train_counts=np.arange(k, 0, -1), group_of=np.zeros(k, int),
        nc_history=np.asarray(json.dumps(history)),
    )  # fmt: skip
    return name


def _report(epoch: int, **extra) -> dict:
    """A single-worker trial's report as Tune hands it over: the engine's values and Tune's own."""
    static = {"data_fingerprint": "abc", "num_train": 120, "world_size": 1, "classes_many": 3, "classes_medium": 4,
              "classes_few": 3}  # fmt: skip
    return {"epoch": epoch, "val_acc_all": 0.5 + epoch / 10, "loss": 1.0 / epoch, **static, **TUNE_KEYS, **extra}


def test_a_trial_run_is_opened_logged_given_its_figures_and_closed_by_the_driver(study_folder):
    paths, tracker, parent = study_folder
    runs = pickle.loads(pickle.dumps(TrialRuns()))  # Tune pickles its callbacks with the experiment
    trial = _trial(paths, "abc12_00000", {"regularizer.lambda_within": 0.0123456, "train.seed": 1})
    runs.on_trial_start(0, [], trial)
    for epoch in (1, 2):
        runs.on_trial_result(0, [], trial, _report(epoch, checkpoint_path=None if epoch == 1 else "/elsewhere"))
    trial.last_result = _report(2, checkpoint_dir_name=_final_checkpoint(trial))
    runs.on_trial_complete(0, [], trial)

    (run,) = tracker.children(parent)
    assert run.info.run_name == "λW=0.012 seed=1"  # a study of two seeds: the seed sets the trial apart
    assert "`regularizer.lambda_within` = 0.0123456" in run.data.tags["mlflow.note.content"]  # its description
    assert run.data.tags[TRIAL_TAG] == "abc12_00000" and run.data.tags[PARENT_TAG] == parent
    assert run.info.status == "FINISHED"
    assert set(run.data.metrics) == {"val_acc_all", "loss"}  # what moves; the constants are params
    assert run.data.metrics["val_acc_all"] == pytest.approx(0.7)
    assert (run.data.params["num_train"], run.data.params["classes_few"]) == ("120", "3")
    experiment = tracker.client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert not set(TUNE_KEYS) & set(run.data.metrics) and "checkpoint_path" not in run.data.params
    client = mlflow.MlflowClient(tracker.uri)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == {
        "figures/angles.png", "figures/norms.png", "figures/nc_curves.png"
    }  # fmt: skip
    assert COLLAPSE_FILE in {a.path for a in client.list_artifacts(run.info.run_id)}
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.digest == "abc"


def test_a_resumed_trial_reopens_its_run_and_logs_each_epoch_once(study_folder):
    paths, tracker, parent = study_folder
    trial = _trial(paths, "abc12_00001", {"train.seed": 0})
    first = TrialRuns()
    first.on_trial_start(0, [], trial)
    first.on_trial_result(0, [], trial, _report(1))
    tracker.close_interrupted(parent)  # the driver was stopped; `resume` marks the run KILLED first

    resumed = TrialRuns()  # the copy Tune unpickles on resume, in a new driver
    resumed.on_trial_start(0, [], trial)
    (run,) = tracker.children(parent)
    assert run.info.status == "RUNNING"
    for epoch in (1, 2):  # the restored trial reports its checkpoint's epoch again, then goes on
        resumed.on_trial_result(0, [], trial, _report(epoch))
    resumed.on_trial_error(0, [], trial)

    (run,) = tracker.children(parent)
    assert run.info.status == "FAILED"
    history = mlflow.MlflowClient(tracker.uri).get_metric_history(run.info.run_id, "val_acc_all")
    assert [m.step for m in history] == [1, 2]


def test_a_trial_stopped_before_its_last_epoch_gets_no_figures(study_folder):
    paths, tracker, parent = study_folder
    trial = _trial(paths, "abc12_00002", {"train.seed": 0})
    runs = TrialRuns()
    runs.on_trial_result(0, [], trial, _report(1))  # its run opened on first use
    (Path(trial.path) / "checkpoint_000000").mkdir()  # a checkpoint without collapse.npz (ASHA stopped it)
    trial.last_result = _report(1, checkpoint_dir_name="checkpoint_000000")
    runs.on_trial_complete(0, [], trial)
    (run,) = tracker.children(parent)
    assert run.info.status == "FINISHED"
    assert mlflow.MlflowClient(tracker.uri).list_artifacts(run.info.run_id) == []
