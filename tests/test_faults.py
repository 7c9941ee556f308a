"""Faults (slow: each starts its own Ray): the driver killed mid-study then `resume`, and a trial's
training process killed mid-trial, the latter on both paths a trial can take (docs/ray.md, "Which path a trial
takes"): a single-worker trial trained in its Tune trial actor, and a 2-worker Ray Train trial. Each
runs the CLI in a subprocess with its own local Ray (RAY_ADDRESS=local), so the session's Ray
instance of the other tests is not involved."""

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from processes import TINY, _session, cli, kill_session, stage_a_replaced_checkpoint, wait_for

QUICK = [*TINY, "--set", "train.epochs=3"]
pytestmark = pytest.mark.slow
# The process that trains: the Tune trial actor itself, or a Ray Train worker of a DDP trial.
PATHS = pytest.mark.parametrize(
    "workers, trainer", [(1, b"ray::ImplicitFunc"), (2, b"RayTrainWorker")], ids=["single-worker", "ray-train"]
)


@pytest.mark.parametrize("workers", [1, 2], ids=["single-worker", "ray-train"])
def test_driver_killed_after_the_first_trial_then_resume_completes_every_trial_once(tmp_path, workers):
    results, log = tmp_path / "results", tmp_path / "run.log"
    run = cli("run", "studies/quickstart.yaml", "--set", "name=killed", "--set", "search.num_samples=3", *QUICK,
              "--set", f"resources.num_workers={workers}", results=results, log=log)  # fmt: skip
    try:
        wait_for(log, " finished ", run)
    finally:
        kill_session(run.pid)
    assert not (results / "killed" / "trials.parquet").exists()
    # The race CI once met: Tune had deleted the checkpoint its saved state names (a newer one replaced
    # it) when the driver died; staged for every trial the state names, resume must give it back.
    experiment = results / "killed" / "ray" / "tune"
    if workers == 1 and list(experiment.glob("experiment_state-*.json")):
        stage_a_replaced_checkpoint(experiment)

    resume = cli("resume", "killed", results=results, log=tmp_path / "resume.log")
    assert resume.wait(timeout=600) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    trials = pd.read_parquet(results / "killed" / "trials.parquet")
    assert len(trials) == 3 and trials["trial_id"].is_unique

    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    finished = sorted(r.info.run_id for r in children if r.info.status == "FINISHED")
    assert finished == sorted(trials["mlflow_run_id"])
    # A trial that had just started when the driver died, before Tune saved it in its experiment
    # state, is run again under a new id after the resume; the run of the killed attempt stays, KILLED.
    assert all(r.info.status == "KILLED" for r in children if r.info.run_id not in finished)
    assert [r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags] == ["FINISHED"]


@PATHS
def test_the_training_process_killed_mid_trial_restarts_from_its_checkpoint(tmp_path, workers, trainer):
    # Long enough to find the worker after two reported epochs: 40 tiny epochs took 9 s once the
    # report throttle was gone, and the trial ended before the test could kill its worker.
    n_epochs = 200
    results, log = tmp_path / "results", tmp_path / "run.log"
    run = cli("run", "studies/quickstart.yaml", "--set", "name=workerkill", "--set", "search.num_samples=1",
              "--set", "resources.max_failures=2", *QUICK, "--set", f"train.epochs={n_epochs}",
              "--set", f"resources.num_workers={workers}", results=results, log=log)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        victim = None
        while victim is None and time.monotonic() < deadline:
            reports = list((results / "workerkill" / "reports").glob("*.jsonl"))
            if reports and reports[0].read_text().count("\n") >= 2:  # two epochs reported
                victim = next((int(p) for p in os.listdir("/proc") if p.isdigit() and _session(int(p)) == run.pid
                               and trainer in _cmdline(p)), None)  # fmt: skip
            assert run.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        assert victim is not None, f"no {trainer.decode()} process found"
        os.kill(victim, signal.SIGKILL)
        assert run.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        kill_session(run.pid)
    epochs = pd.read_parquet(results / "workerkill" / "epochs.parquet")
    assert sorted(epochs["epoch"]) == list(range(1, n_epochs + 1))  # every epoch once, the restarted ones deduplicated
    # Restarted from its checkpoint, not from scratch: the restarted trial reported epoch 1 again with
    # the numbers the checkpoint kept (its time included), not a second training of it.
    first_epoch = [r["epoch_time_s"] for r in map(json.loads, reports[0].read_text().splitlines()) if r["epoch"] == 1]
    assert len(first_epoch) == 2 and first_epoch[0] == first_epoch[1], first_epoch
    assert len(pd.read_parquet(results / "workerkill" / "trials.parquet")) == 1


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def test_a_lost_worker_is_a_failed_trial_that_resume_then_finishes(tmp_path):
    """kill -9 of the second trial's process with max_failures 0: Tune's saved state can keep that
    trial running (it was saving a checkpoint), and the study was reported as interrupted (exit 130).
    It is a failed trial (exit 1, listed, Optuna FAIL); `resume` continues it from its checkpoint and
    Optuna gets its outcome as a COMPLETE trial (docs/reliability.md, "A lost trial process")."""
    results, log = tmp_path / "results", tmp_path / "run.log"
    run = cli("run", "studies/quickstart.yaml", "--set", "name=lost", "--set", "search.num_samples=2",
              *TINY, "--set", "train.epochs=200", "--set", "resources.max_failures=0", results=results, log=log)  # fmt: skip
    try:
        wait_for(log, "(1/2)", run)  # the first trial ended
        second = None
        deadline = time.monotonic() + 300
        while second is None and time.monotonic() < deadline:
            reports = sorted((results / "lost" / "reports").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
            if len(reports) == 2 and reports[-1].read_text().count("\n") >= 2:
                second = reports[-1]
            assert run.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        victim = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _session(int(p)) == run.pid
                      and b"ray::ImplicitFunc" in _cmdline(p))  # fmt: skip
        os.kill(victim, signal.SIGKILL)
        assert run.wait(timeout=300) == 1, log.read_text()[-3000:]
    finally:
        kill_session(run.pid)
    console = log.read_text()
    trial_id = second.stem
    assert f"trial {trial_id} failed after" in console and "1 of 2 trials failed" in console, console[-2000:]
    assert "Traceback" not in console  # Tune's traceback went to driver.log
    assert "Traceback" in (results / "lost" / "driver.log").read_text()
    storage = f"sqlite:///{results / 'lost' / 'optuna.db'}"
    assert sorted(t.state.name for t in optuna.load_study(study_name="lost", storage=storage).trials) == ["COMPLETE", "FAIL"]

    resume = cli("resume", "lost", results=results, log=tmp_path / "resume.log")
    assert resume.wait(timeout=600) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    trials = pd.read_parquet(results / "lost" / "trials.parquet")
    assert len(trials) == 2 and trial_id in set(trials["trial_id"])
    optuna_trials = optuna.load_study(study_name="lost", storage=storage).trials
    assert [t.state.name for t in optuna_trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert optuna_trials[2].user_attrs["ncstudy_resumed_from"] == 1
    assert optuna_trials[2].params == optuna_trials[1].params


def test_a_disk_filling_up_mid_study_stops_it_as_an_interruption_that_resume_continues(tmp_path, mount):
    """Another process fills the results disk (a real tmpfs) during the first trial: the study stops
    with exit status 75 and one line instead of a traceback, leaves no MLflow run RUNNING, and once
    there is room again `resume` finishes every trial (docs/reliability.md, "Storage faults")."""
    results, log = mount(96), tmp_path / "run.log"
    run = cli("run", "studies/quickstart.yaml", "--set", "name=full", "--set", "search.num_samples=2", *TINY,
              "--set", "train.epochs=200", results=results, log=log)  # fmt: skip
    ballast = results / "ballast"
    try:
        deadline = time.monotonic() + 300
        while not [p for p in (results / "full" / "reports").glob("*.jsonl") if p.read_text().count("\n") >= 2]:
            assert run.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        with open(ballast, "wb") as file, contextlib.suppress(OSError):
            while True:
                file.write(b"\0" * 1024**2)
                file.flush()
        status = run.wait(timeout=300)
    finally:
        kill_session(run.pid)
    text = log.read_text()
    assert status == 75, text[-3000:]
    assert "Traceback" not in text and "error: " in text and "python -m ncstudy resume full" in text, text[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}, [(r.info.run_name, r.info.status) for r in runs]

    ballast.unlink()
    resume = cli("resume", "full", results=results, log=tmp_path / "resume.log")
    assert resume.wait(timeout=600) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    assert len(pd.read_parquet(results / "full" / "trials.parquet")) == 2
