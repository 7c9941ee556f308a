"""A study across two Ray nodes: the multi-node path of `python -m ncstudy run`, on one machine.

A Ray head and a second Ray node are separate `ray start` processes (each in its own session, with
its own temp dir under a short /tmp path), one CPU each. The study runs in a SUBPROCESS (the pytest
process may hold a local Ray of its own, conftest's `ray_session`) and joins the head through
`resources.address`. Each trial asks for 2 Train workers of 1 CPU, so its two ranks can only run on
different nodes; the training loop reports the Ray node id of every rank (`worker_nodes`).

Token authentication (Ray 2.59+): `ray start --head` turns it on by itself when a token exists
(~/.ray/auth_token, written by any earlier local `ray.init()`), but `ray start --address=...` and
`ray.init(address=...)` never do: a second node or a driver without RAY_AUTH_MODE=token is refused
("InvalidAuthToken ... RAY_AUTH_MODE is currently 'disabled'"). So all three processes here get
RAY_AUTH_MODE=token and the same token, from a file of this test (RAY_AUTH_TOKEN_PATH), whatever
the machine's ~/.ray holds. The cluster files do the same with ~/.ray/auth_token.

Both nodes are stopped by signals to their own sessions, never with `ray stop` (which stops every
Ray on the machine, the pytest session's included).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from ray_nodes import free_port, processes_mentioning, ray_start, session_processes, signal_session, stop_session

REPO = Path(__file__).resolve().parents[1]
STUDY_TIMEOUT_S = 300

pytestmark = [
    pytest.mark.slow,  # two Ray nodes and a study: minutes; CI runs it with -m slow
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the processes of each node through /proc"),
]


class TwoNodeCluster:
    """`ray start --head` and `ray start --address` as separate processes, each in its own session."""

    def __init__(self, token_file: Path):
        self.temp_dir = tempfile.mkdtemp(prefix="ncmn-", dir="/tmp")  # short: Unix socket paths
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.sessions: list[int] = []
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(token_file),
            RAY_USAGE_STATS_ENABLED="0",
            # a worker group that cannot start fails the trial instead of waiting forever
            RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="120",
        )
        self.env = env

    def _start(self, *args: str) -> str:
        session, output = ray_start(
            [*args, "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats", f"--object-store-memory={256 * 1024**2}",
             f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={self.temp_dir}"],
            self.env,
        )  # fmt: skip
        self.sessions.append(session)  # the session id of everything this node starts
        return output

    def start(self) -> None:
        self._start(
            "--head", f"--port={self.port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}",
        )  # fmt: skip
        self._start(f"--address={self.address}")

    def node_ids(self) -> dict[str, bool]:
        """{node id: is head} of the alive nodes, once both have registered (a driver subprocess)."""
        probe = (
            "import json, sys, time, ray\n"
            "ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)\n"
            "deadline = time.time() + 60\n"
            "while True:\n"
            "    alive = [n for n in ray.nodes() if n['Alive']]\n"
            "    if len(alive) >= 2 or time.time() > deadline: break\n"
            "    time.sleep(0.5)\n"
            "print(json.dumps({n['NodeID']: 'node:__internal_head__' in n['Resources'] for n in alive}))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe, self.address], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def stop(self) -> list[str]:
        """Stop the worker node, then the head, the way `ray stop` orders it (raylet, then the
        other processes, then the GCS), SIGTERM first and SIGKILL after a grace period. Returns
        what is still alive afterwards (nothing, normally)."""
        for sid in reversed(self.sessions):
            stop_session(sid)
        left = [f"{pid} {name} (session {sid})" for sid in self.sessions for pid, name in session_processes(sid)]
        left += [f"{pid} (mentions {self.temp_dir})" for pid in processes_mentioning(self.temp_dir)]
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left


def test_a_study_spreads_each_trial_over_two_nodes(tmp_path):
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    shared = tmp_path / "shared-results"  # on one machine, a folder both nodes see
    cluster = TwoNodeCluster(token)
    driver_session = None
    phases: dict[str, float] = {}
    try:
        started = time.monotonic()
        cluster.start()
        nodes = cluster.node_ids()
        phases["two nodes up"] = time.monotonic() - started
        assert len(nodes) == 2 and sum(nodes.values()) == 1, nodes

        # Without token mode a driver (or a node) cannot join this cluster (Ray 2.59+).
        if importlib.util.find_spec("ray._private.authentication") is not None:
            refused = subprocess.run(
                [sys.executable, "-c", "import sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR')",
                 cluster.address],
                env={**{k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")},
                     "RAY_gcs_server_port_wait_time_s": "2"},  # 2 connection attempts, not 20
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert refused.returncode != 0 and "InvalidAuthToken" in refused.stderr, refused.stderr[-2000:]
            phases["driver without token refused"] = time.monotonic() - started - sum(phases.values())

        command = [
            sys.executable, "-m", "ncstudy", "run", "studies/quickstart.yaml", "--results", str(shared),
            "--set", "name=twonode", "--set", "train.epochs=1", "--set", "search.num_samples=2",
            "--set", "search.max_concurrent=1", "--set", "resources.num_workers=2",
            "--set", "resources.cpus_per_worker=1", "--set", f"resources.address={cluster.address}",
            "--set", "model.width=4",
        ]  # fmt: skip
        study = subprocess.Popen(
            command, cwd=REPO, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        driver_session = study.pid
        try:
            output, _ = study.communicate(timeout=STUDY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(study.pid, signal.SIGKILL)
            output, _ = study.communicate()
            pytest.fail(f"the study did not finish in {STUDY_TIMEOUT_S} s:\n{output[-4000:]}")
        assert study.returncode == 0, output[-4000:]
        phases["study"] = time.monotonic() - started - sum(phases.values())

        folder = shared / "twonode"
        trials = pd.read_parquet(folder / "trials.parquet")
        assert len(trials) == 2, trials
        assert "worker_nodes" in trials, "the training loop must report worker_nodes (ncstudy/study/train_worker.py)"
        for trial in trials.itertuples():
            ranks = trial.worker_nodes.split(",")
            assert trial.world_size == 2 and len(ranks) == 2, trial
            assert ranks[0] != ranks[1], f"trial {trial.trial_id}: both ranks on node {ranks[0]}"
            assert set(ranks) == set(nodes), f"trial {trial.trial_id} ran on {ranks}, the cluster is {list(nodes)}"
        assert trials["test_acc_all"].between(0, 1).all()

        # Everything landed in the one folder both nodes see: the driver's tables and tracking,
        # Tune's experiment state, and each trial's checkpoint that its rank 0 persisted.
        for name in ("study.yaml", "trials.parquet", "epochs.parquet", "report.md"):
            assert (folder / name).is_file(), name
        assert (shared / "mlflow.db").is_file()
        assert (folder / "ray" / "tune").is_dir()
        checkpoints = sorted((folder / "ray" / "train").glob("train_*/checkpoint_*/checkpoint.pt"))
        assert len(checkpoints) == 2, checkpoints
    finally:
        if driver_session is not None:  # the driver has exited; nothing it started may linger
            signal_session(driver_session, None, signal.SIGKILL)
        stopping = time.monotonic()
        left = cluster.stop()
        phases["stop"] = time.monotonic() - stopping
        print("two-node test, seconds:", ", ".join(f"{k} {v:.0f}" for k, v in phases.items()))
    assert left == [], f"Ray processes of this test are still running: {left}"
    if driver_session is not None:
        assert session_processes(driver_session) == []
