"""A study on a cluster that grows and shrinks: Ray's real autoscaler with its fake multi-node
provider (tests/fake_cluster.py), configured from cluster/aws-gpu.yaml's node types scaled to this
machine (a head with no CPU for trials, 0 to 2 workers of 1 CPU and no GPU).

- The quick start submitted to it starts with no worker node, says that its trials wait for nodes
  while the autoscaler adds them, runs on the added nodes (each trial's `worker_nodes`), survives a
  worker node killed mid-trial (every process of that node at once, as a spot reclaim) by continuing
  the trial from its checkpoint on another node, finishes with exit status 0, every epoch once and
  one FINISHED MLflow run per trial; the idle nodes go away afterwards.
- A trial no node type can hold (2 CPUs) stops the study after `resources.node_wait_s` with one
  `error:` line and exit status 2, its state kept for `resume`, instead of waiting forever.

One head for the module (a fixture), stopped by its session, never with `ray stop`. Each study is a
CLI subprocess in a session of its own, joined to the head through `resources.address`.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from fake_cluster import FakeCluster
from processes import TINY, kill_session
from ray import tune

REPO = Path(__file__).resolve().parents[1]
STUDY_TIMEOUT_S = 240
pytestmark = [
    pytest.mark.slow,  # a Ray head, nodes started and stopped by its autoscaler, two studies: minutes
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds each node's processes through /proc"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    token = tmp_path_factory.mktemp("token") / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    cluster = FakeCluster(token)
    try:
        cluster.start()
        yield cluster
    finally:
        left = cluster.stop()
        assert left == [], f"Ray processes of this test are still running: {left}"


def study(cluster: FakeCluster, results: Path, log: Path, *overrides: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "ncstudy", "run", "studies/quickstart.yaml", "--results", str(results), *TINY,
               "--set", f"resources.address={cluster.address}", *overrides]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, env={**cluster.env, "PYTHONUNBUFFERED": "1"}, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def finish(run: subprocess.Popen, log: Path, timeout: float = STUDY_TIMEOUT_S) -> int:
    try:
        return run.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the study did not end in {timeout} s:\n{log.read_text()[-4000:]}")
    finally:
        kill_session(run.pid)


def test_trials_wait_for_added_nodes_survive_a_lost_node_and_idle_nodes_go_away(cluster, tmp_path):
    started = time.monotonic()
    n_epochs = 30  # ~0.3 s each: the kill lands mid-trial
    results, log = tmp_path / "results", tmp_path / "run.log"
    run = study(cluster, results, log, "--set", "name=grow", "--set", "search.num_samples=2",
                "--set", "resources.max_failures=1", "--set", f"train.epochs={n_epochs}")  # fmt: skip
    try:
        # The first trial's node, once the trial has reported two epochs: all its processes killed.
        deadline = time.monotonic() + STUDY_TIMEOUT_S
        victim = None
        while victim is None:
            assert run.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            reports = sorted((results / "grow" / "reports").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
            lines = reports[0].read_text().splitlines() if reports else []
            if len(lines) >= 2:
                victim_trial, victim = reports[0].stem, json.loads(lines[0])["worker_nodes"]
            time.sleep(0.2)
        assert cluster.kill_node(victim), f"no process of node {victim} found"
        killed_at = time.monotonic() - started
        status = finish(run, log)
    finally:
        kill_session(run.pid)
    output = log.read_text()
    assert status == 0, output[-4000:]
    assert "joined the cluster at" in output and "(1 node, 0 CPUs, 0 GPUs)" in output, output[:2000]  # no worker yet
    assert "waiting for nodes: 1 trial needs 1 CPU each; the autoscaler is adding 1 ray.worker.gpu node" in output, output

    trials = pd.read_parquet(results / "grow" / "trials.parquet")
    assert len(trials) == 2 and trials["trial_id"].is_unique, trials
    workers = set(trials["worker_nodes"])
    assert not any(node.endswith("00000") for node in workers), workers  # never the head (fake_multi_node ids)
    assert victim not in set(trials.loc[trials["trial_id"] == victim_trial, "worker_nodes"]), "not moved to another node"

    epochs = pd.read_parquet(results / "grow" / "epochs.parquet")
    for trial_id, rows in epochs.groupby("trial_id"):
        assert sorted(rows["epoch"]) == list(range(1, n_epochs + 1)), (trial_id, sorted(rows["epoch"]))
    # From its checkpoint, not from scratch: the restarted trial said its first epoch again with the
    # numbers the checkpoint kept (ncstudy.study.in_trial), not a second training of it.
    reports = [json.loads(line) for line in (results / "grow" / "reports" / f"{victim_trial}.jsonl").read_text().splitlines()]
    first = [r["epoch_time_s"] for r in reports if r["epoch"] == 1]
    assert len(first) == 2 and first[0] == first[1], first
    assert reports[-1]["worker_nodes"] != victim

    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("grow").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.info.run_id for r in children if r.info.status == "FINISHED") == sorted(trials["mlflow_run_id"])
    assert len(children) == 2, [(r.info.run_id, r.info.status) for r in children]

    # Idle nodes go away (idle_timeout_minutes of the config), their processes with them.
    deadline = time.monotonic() + 90
    while cluster.worker_nodes():
        assert time.monotonic() < deadline, f"worker nodes still up: {cluster.worker_nodes()}"
        time.sleep(2)
    assert not any(cluster.node_processes(node) for node in workers | {victim})
    print(f"autoscaler test: kill at {killed_at:.0f} s, all done at {time.monotonic() - started:.0f} s")


def test_trials_no_node_can_hold_stop_the_study_instead_of_waiting_forever(cluster, tmp_path):
    started = time.monotonic()
    results, log = tmp_path / "results", tmp_path / "run.log"
    run = study(cluster, results, log, "--set", "name=stuck", "--set", "search.num_samples=1",
                "--set", "resources.cpus_per_worker=2", "--set", "resources.node_wait_s=10")  # fmt: skip
    status = finish(run, log, timeout=150)  # today's code waited here forever
    output = log.read_text()
    assert status == 2, output[-4000:]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "resources.node_wait_s: trials waited 10 s" in errors[0], output[-4000:]
    assert "a trial needs 2 CPU, the largest node of the cluster has no CPU or GPU" in errors[0], errors
    assert "ncstudy resume stuck --results" in errors[0], errors
    assert "waiting for nodes: 1 trial needs 2 CPU each; no node is being added" in output, output[-4000:]
    # Stopped as an interruption: Tune's state saved for `resume`, the folder and MLflow say so.
    folder = results / "stuck"
    assert json.loads((folder / "state.json").read_text())["state"] == "interrupted"
    assert tune.Tuner.can_restore(str(folder / "ray" / "tune"))
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    parent = [r for r in client.search_runs([client.get_experiment_by_name("stuck").experiment_id])
              if "mlflow.parentRunId" not in r.data.tags]  # fmt: skip
    assert [r.info.status for r in parent] == ["KILLED"]
    print(f"node-wait test: {time.monotonic() - started:.0f} s")
