"""Faults (slow: each starts its own Ray): the driver killed mid-study then `resume`, and a trial's
training process killed mid-trial, the latter on both paths a trial can take (docs/ray.md, "Which path a trial
takes"): a single-worker trial trained in its Tune trial actor, and a 2-worker Ray Train trial. Each
runs the CLI in a subprocess with its own local Ray (RAY_ADDRESS=local), so the session's Ray
instance of the other tests is not involved."""

import json
import os
import signal
import time
from pathlib import Path

import mlflow
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
