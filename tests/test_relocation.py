"""A copied or moved study folder resumes into itself (docs/reliability.md, "A copied or moved study
folder"): each store that kept an absolute path (Tune's search state, the Optuna storage, MLflow's
artifact locations) is checked on its own here in seconds, and the whole path end to end in the slow
suite: interrupt, copy, resume the copy with the original compared byte for byte, move, resume."""

from __future__ import annotations

import hashlib
import pickle
import shutil
import signal
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from processes import TINY, cli, kill_session, wait_for

from ncstudy.outputs.study_folder import study_paths
from ncstudy.outputs.study_record import moved_from, write_record
from ncstudy.study.relocation import relocate, repoint_mlflow_artifacts, repoint_tune_search_state
from ncstudy.study.search import StudyOptunaStorage, open_optuna_in
from ncstudy.study.tracking import StudyTracker


def fingerprints(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_optuna_storage_pickles_without_a_path_and_opens_in_the_folder_named(tmp_path):
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    open_optuna_in(original)
    study = optuna.create_study(study_name="s", storage=StudyOptunaStorage(original))
    study.enqueue_trial({"x": 1.0})
    pickled = pickle.dumps(study)
    assert str(original).encode() not in pickled
    shutil.copytree(original, copy)
    before = fingerprints(original)

    open_optuna_in(copy)
    restored = pickle.loads(pickled)
    restored.optimize(lambda trial: trial.suggest_float("x", 0, 2), n_trials=2)
    assert fingerprints(original) == before
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{copy / 'optuna.db'}").trials) == 2


def test_mlflow_artifact_paths_move_with_the_results_folder(tmp_path):
    original, copy = tmp_path / "original", tmp_path / "copy"
    tracker = StudyTracker(f"sqlite:///{original / 'mlflow.db'}", "s", artifact_root=original / "mlartifacts")
    (tmp_path / "study.yaml").write_text("name: s\n")
    run_id = tracker.start_study("s", {"a": 1}, tmp_path / "study.yaml")
    shutil.copytree(original, copy)
    before = fingerprints(original)

    assert repoint_mlflow_artifacts(copy / "mlflow.db", original / "mlartifacts", copy / "mlartifacts") == 2
    client = mlflow.MlflowClient(f"sqlite:///{copy / 'mlflow.db'}")
    # MLflow caches each run's artifact store by run id in the process; a resume is a new process
    mlflow.tracking._tracking_service.utils._artifact_repos_cache.clear()
    client.log_artifact(run_id, str(tmp_path / "study.yaml"), artifact_path="again")
    assert (copy / "mlartifacts" / run_id / "artifacts" / "again" / "study.yaml").exists()
    assert client.get_experiment_by_name("s").artifact_location == (copy / "mlartifacts").as_uri()
    assert fingerprints(original) == before


def test_tune_s_saved_search_state_is_pointed_at_the_new_folder(tmp_path):
    from ray.tune import Experiment
    from ray.tune.search import BasicVariantGenerator

    original = tmp_path / "original" / "ray"
    experiment = Experiment("tune", run=lambda config: None, storage_path=str(original), config={"x": 1})
    generator = BasicVariantGenerator()
    generator.add_configurations([experiment])
    generator.save_to_dir(str(original / "tune"), session_str="s")
    copy = tmp_path / "copy" / "ray"
    shutil.copytree(original, copy)

    assert repoint_tune_search_state(copy / "tune", copy) == 1
    restored = BasicVariantGenerator()
    restored.restore_from_dir(str(copy / "tune"))
    trial = restored.next_trial()
    assert trial.storage.experiment_fs_path == (copy / "tune").as_posix()
    assert repoint_tune_search_state(copy / "tune", copy) == 0  # already pointed: nothing rewritten


def test_a_folder_is_relocated_once_and_says_from_where(tmp_path):
    paths = study_paths(tmp_path / "original", "s")
    paths.folder.mkdir(parents=True)
    paths.config_file.write_text("name: s\n")
    write_record(paths, {"name": "s"})
    assert moved_from(paths) is None and relocate(paths, default_store=True) is None
    shutil.move(tmp_path / "original", tmp_path / "moved")
    moved = study_paths(tmp_path / "moved", "s")
    assert moved_from(moved) == paths.folder
    assert str(paths.folder) in relocate(moved, default_store=True)
    assert moved_from(moved) is None  # recorded in its new place


@pytest.mark.slow
def test_a_copied_then_moved_interrupted_study_resumes_into_itself(tmp_path):
    results, log = tmp_path / "results", tmp_path / "run.log"
    run = cli("run", "studies/quickstart.yaml", "--set", "name=moving", "--set", "search.num_samples=3",
              "--set", "train.epochs=30", *TINY, results=results, log=log)  # fmt: skip
    try:
        wait_for(log, " finished ", run)
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=300) == 130, log.read_text()[-3000:]
    finally:
        kill_session(run.pid)
    copy = tmp_path / "copy"
    shutil.copytree(results, copy, symlinks=True)
    before = fingerprints(results)

    resumed = cli("resume", "moving", results=copy, log=tmp_path / "copy.log")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "copy.log").read_text()[-3000:]
    assert fingerprints(results) == before, "the resume of a copy wrote into the original"
    assert f"started at {results / 'moving'}" in (tmp_path / "copy.log").read_text()
    assert_complete(copy)

    moved = tmp_path / "moved"
    shutil.move(results, moved)
    resumed = cli("resume", "moving", results=moved, log=tmp_path / "moved.log")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "moved.log").read_text()[-3000:]
    assert_complete(moved)


def assert_complete(results: Path) -> None:
    """Three trials in the folder's own stores: Tune's, Optuna's, MLflow's runs and artifacts."""
    folder = results / "moving"
    assert len(pd.read_parquet(folder / "trials.parquet")) == 3
    assert all(Path(p).is_relative_to(folder) for p in folder.glob("ray/tune/*/checkpoint_*"))
    optuna_study = optuna.load_study(study_name="moving", storage=f"sqlite:///{folder / 'optuna.db'}")
    assert [t.state.name for t in optuna_study.trials] == ["COMPLETE"] * 3
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("moving").experiment_id])
    assert all(r.info.artifact_uri.startswith((results / "mlartifacts").as_uri()) for r in runs)
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 4
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.tags["ncstudy.folder"].endswith(f":{folder.resolve()}")  # the folder that wrote it last
