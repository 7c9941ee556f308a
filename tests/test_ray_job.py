"""A study as a Ray job, the way docs/cluster.md runs one, played on this machine (127.0.0.1 only).

The head is started with cluster/onprem.yaml's own commands (its `ray start --head` line and its
MLflow tracking-server line, in the environment its setup commands export: token authentication,
`RAY_JOB_STOP_SIGNAL=SIGINT`); the study is submitted, followed, stopped and resumed with the
commands of docs/cluster.md; then the laptop side: the documented backup of the server's database,
a copy of the shared folder, `report` and `mlflow ui` on the copy.

What is changed, and only that: addresses and ports (127.0.0.1 and free ports, so the test never
meets another Ray), the head's "own disk" and `/shared` (temporary folders), the study (the quick
start, sized down with --set), the temp dir and the dashboard agent's port (per test), and
`--autoscaling-config`, which points at the file `ray up` writes on a real head (the autoscaler is
played by tests/test_autoscaler.py). The token lives in a file of the test (RAY_AUTH_TOKEN_PATH),
never in ~/.ray.

Everything the test starts is stopped by its own processes (found by the test's temp folder in
their command lines), never with `ray stop`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ray_nodes import free_port, processes_mentioning

REPO = Path(__file__).resolve().parents[1]
CLUSTER_FILE = REPO / "cluster" / "onprem.yaml"
GUIDE = REPO / "docs" / "cluster.md"
HEAD_IP = "192.168.1.10"  # the file's head address
EPOCHS = 40
# The quick start sized down (tests/processes.py TINY): trials of seconds, two of them one after the other.
SIZED = ["--set", "search.num_samples=2", "--set", "search.max_concurrent=1", "--set", f"train.epochs={EPOCHS}",
         "--set", "model.width=4", "--set", "model.feature_dim=16", "--set", "metrics.every=0"]  # fmt: skip

pytestmark = [
    pytest.mark.slow,  # a Ray head, an MLflow server and two jobs: minutes; CI runs it with -m slow
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the test's processes through /proc"),
]


def documented(start: str) -> str:
    """The command of docs/cluster.md that starts with `start` (a code line; `\\` continuations
    joined, a trailing `# comment` dropped)."""
    lines = GUIDE.read_text().replace("\\\n", " ").splitlines()
    found = [re.sub(r"\s+#.*$", "", line).strip() for line in lines if line.strip().startswith(start)]
    assert found, f"docs/cluster.md no longer has a command starting with {start!r}"
    return " ".join(found[0].split())


def head_commands() -> tuple[str, str, dict[str, str]]:
    """cluster/onprem.yaml's `ray start --head` line, its MLflow line, and the variables its setup
    commands export into every later command (~/.bashrc)."""
    config = yaml.safe_load(CLUSTER_FILE.read_text())
    ray_start = [c for c in config["head_start_ray_commands"] if "ray start --head" in c]
    mlflow = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    exports = " ".join(c for c in config["setup_commands"] if ".bashrc" in c)
    variables = dict(re.findall(r"\b(RAY_[A-Z_]+)=([^\s'\"]+)", exports))
    assert len(ray_start) == 1 and len(mlflow) == 1, "cluster/onprem.yaml: one `ray start --head` and one MLflow command"
    assert {"RAY_AUTH_MODE", "RAY_JOB_STOP_SIGNAL"} <= variables.keys(), exports
    return ray_start[0], mlflow[0], variables


class Head:
    """The file's head on 127.0.0.1: Ray (dashboard and job server) and the MLflow server."""

    def __init__(self, root: Path, token: str):
        self.root = root
        self.disk = root / "head-disk"  # MLflow's database: the head's own disk, never /shared
        self.shared = root / "shared"
        self.disk.mkdir()
        (self.shared / "ncstudy-results").mkdir(parents=True)
        token_file = root / "auth_token"
        token_file.write_text(token)
        ray_start, mlflow, variables = head_commands()
        self.gcs_port, self.dashboard_port, self.mlflow_port = free_port(), free_port(), free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(variables, RAY_AUTH_TOKEN_PATH=str(token_file), RAY_USAGE_STATS_ENABLED="0",
                        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")  # fmt: skip
        self.ray_start = (
            ray_start.replace(HEAD_IP, "127.0.0.1")
            .replace("--port=6379", f"--port={self.gcs_port}")
            .replace(" --autoscaling-config=~/ray_bootstrap_config.yaml", "")
            + f" --dashboard-port={self.dashboard_port} --dashboard-agent-listen-port={free_port()}"
            + f" --temp-dir={root / 'ray'}"
        )
        self.mlflow = (
            mlflow.replace(HEAD_IP, "127.0.0.1")
            .replace("MLFLOW_DIR=/var/tmp/ncstudy-mlflow-$USER", f"MLFLOW_DIR={self.disk}")
            .replace("/shared", str(self.shared))
            .replace(":5000", f":{self.mlflow_port}")
            .replace("--port 5000", f"--port {self.mlflow_port}")
        )
        assert "5000" not in self.mlflow and HEAD_IP not in self.ray_start + self.mlflow

    @property
    def results(self) -> Path:
        return self.shared / "ncstudy-results"

    @property
    def tracking(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def shell(self, command: str, timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], cwd=REPO, env=env or self.env, capture_output=True, text=True,
                              timeout=timeout, start_new_session=True)  # fmt: skip

    def start(self) -> None:
        started = self.shell(self.ray_start)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        served = self.shell(self.mlflow)  # returns at once: the server detaches (nohup setsid ... &)
        assert served.returncode == 0, served.stderr[-3000:]
        wait_for_url(f"{self.tracking}/health", timeout=90)

    def stop(self) -> list[int]:
        """SIGKILL every process started from this test's folder (Ray's, MLflow's); those left."""
        for _ in range(3):
            for pid in processes_mentioning(str(self.root)):
                try:
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(1)
        return processes_mentioning(str(self.root))


def wait_for_url(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            assert time.monotonic() < deadline, f"nothing answers at {url} after {timeout} s"
            time.sleep(0.5)


def rest(base: str, path: str, body: dict | None = None, params: dict | None = None) -> dict:
    """MLflow's REST API (what the UI and every client use): POST with a JSON body, or GET."""
    url = f"{base}/api/2.0/mlflow/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def runs_of(base: str, experiment: str) -> list[dict]:
    found = rest(base, "experiments/get-by-name", params={"experiment_name": experiment})["experiment"]
    return rest(base, "runs/search", {"experiment_ids": [found["experiment_id"]], "max_results": 100})["runs"]


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def figure_bytes(base: str, run_id: str) -> bytes:
    """One figure of a trial's run, listed and downloaded through the server (its artifact proxy)."""
    listed = rest(base, "artifacts/list", params={"run_id": run_id, "path": "figures"}).get("files", [])
    pngs = [f["path"] for f in listed if f["path"].endswith(".png")]
    assert pngs, f"run {run_id} has no figures: {listed}"
    query = urllib.parse.urlencode({"path": pngs[0], "run_uuid": run_id})
    with urllib.request.urlopen(f"{base}/get-artifact?{query}", timeout=30) as response:
        return response.read()


def job(head: Head, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """A `ray job ...` command of the guide, run from the repository root with RAY_ADDRESS set to
    the dashboard as the guide's tunnel gives it."""
    env = {**head.env, "RAY_ADDRESS": f"http://127.0.0.1:{head.dashboard_port}"}
    return head.shell(command, timeout=timeout, env=env)


def test_a_study_as_a_ray_job_is_stopped_resumed_and_read_on_a_laptop(tmp_path):
    token = secrets.token_hex(32)
    root = Path(tempfile.mkdtemp(prefix="ncjob-", dir="/tmp"))  # short: Ray's Unix socket paths
    head = Head(root, token)
    phases: dict[str, float] = {}
    clock = time.monotonic()

    def phase(name: str) -> None:
        nonlocal clock
        phases[name], clock = time.monotonic() - clock, time.monotonic()

    sizes = " ".join(SIZED)
    to_here = {"/shared/ncstudy-results": str(head.results), "http://$HEAD_IP:5000": head.tracking,
               "cifar_lt": "quickstart", "cifar-lt-1": "quickstart-1"}  # fmt: skip

    def here(command: str) -> str:
        for documented_text, local in to_here.items():
            command = command.replace(documented_text, local)
        return command

    submit = here(documented("ray job submit --submission-id cifar-lt-1")).replace(" --set data.root=/shared/data", "")
    resume = here(documented("ray job submit --working-dir . -- python -m ncstudy resume"))
    try:
        head.start()
        phase("head and MLflow server")

        # Submit, as the guide does (with --no-wait), and follow with `ray job logs` / `status`.
        submitted = job(head, f"{submit} {sizes}")
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        reports = head.results / "quickstart" / "reports"
        deadline = time.monotonic() + 240
        while not [p for p in reports.glob("*.jsonl") if p.read_text().count("\n") >= 3]:
            status = job(head, here(documented("ray job status cifar-lt-1")))
            assert "RUNNING" in status.stdout + status.stderr or "PENDING" in status.stdout + status.stderr, (
                status.stdout + status.stderr + job(head, "ray job logs quickstart-1").stdout[-3000:]
            )
            assert time.monotonic() < deadline, job(head, "ray job logs quickstart-1").stdout[-3000:]
            time.sleep(1)
        phase("job submitted, first trial at epoch 3")

        # `ray job stop` (RAY_JOB_STOP_SIGNAL=SIGINT from the file): stopped as Ctrl-C stops a study.
        stopped = job(head, here(documented("ray job stop cifar-lt-1")), timeout=120)
        assert stopped.returncode == 0, stopped.stdout[-2000:] + stopped.stderr[-2000:]
        status = job(head, here(documented("ray job status cifar-lt-1")))
        assert "was stopped" in status.stdout + status.stderr, status.stdout + status.stderr  # STOPPED
        logs = job(head, here(documented("ray job logs -f cifar-lt-1"))).stdout
        folder = head.results / "quickstart"
        assert f"results:  {folder}/trials.parquet" in logs, logs[-3000:]  # where the results are
        assert "stopping: Ray Tune saves the study's state" in logs and "interrupted:" in logs, logs[-3000:]
        assert "Traceback" not in logs and "performance bottleneck" not in logs, logs[-3000:]
        assert json.loads((folder / "state.json").read_text())["state"] == "interrupted"
        runs = runs_of(head.tracking, "quickstart")
        assert {r["info"]["status"] for r in runs} <= {"KILLED", "FINISHED"} and "KILLED" in {r["info"]["status"] for r in runs}
        phase("job stopped")

        # The guide's resume submission (it waits for the job): the planned trials, every epoch once.
        resumed = job(head, resume, timeout=300)
        assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-2000:]
        assert "succeeded" in resumed.stdout + resumed.stderr  # SUCCEEDED
        phase("resumed as a job")
        trials = pd.read_parquet(folder / "trials.parquet")
        epochs = pd.read_parquet(folder / "epochs.parquet")
        assert len(trials) == 2 and set(trials["status"]) == {"finished"}, trials
        for trial_id, rows in epochs.groupby("trial_id"):
            assert sorted(rows["epoch"]) == list(range(1, EPOCHS + 1)), (trial_id, sorted(rows["epoch"]))
        runs = runs_of(head.tracking, "quickstart")
        children = [r for r in runs if "mlflow.parentRunId" in tags(r)]
        assert {r["info"]["status"] for r in runs} == {"FINISHED"} and len(children) == 2, [
            (r["info"]["run_name"], r["info"]["status"]) for r in runs
        ]
        for run in children:
            history = rest(head.tracking, "metrics/get-history", params={"run_id": run["info"]["run_id"], "metric_key": "val_acc_all", "max_results": 1000})  # fmt: skip
            steps = sorted(int(m["step"]) for m in history["metrics"])
            assert steps == list(range(1, EPOCHS + 1)), steps
            assert figure_bytes(head.tracking, run["info"]["run_id"]).startswith(b"\x89PNG")
        assert list((head.results / "mlartifacts").rglob("*.png")), "the server's proxy stores artifacts in /shared"

        # No secret anywhere: the Ray token in no log, no file of the results, no MLflow param or tag.
        every_log = logs + resumed.stdout + resumed.stderr + job(head, "ray job logs quickstart-1").stdout
        assert token not in every_log
        for path in head.results.rglob("*"):
            assert not path.is_file() or token.encode() not in path.read_bytes(), path
        for run in runs:
            values = [p["value"] for p in run["data"].get("params", [])] + list(tags(run).values())
            assert not [v for v in values if token in v], run["info"]["run_name"]

        # The laptop side: the documented backup of the server's database into the shared folder,
        # then a copy of that folder (ray rsync-down is rsync), the cluster gone.
        backup = documented('ray exec cluster/aws-gpu.yaml "sqlite3').split('"')[1]
        backup = backup.replace("~/ncstudy-mlflow", str(head.disk)).replace("/shared/ncstudy-results", str(head.results))
        done = head.shell(backup)
        assert done.returncode == 0, done.stderr
        copy = tmp_path / "results-cluster"
        subprocess.run(["rsync", "-a", f"{head.results}/", f"{copy}/"], check=True, timeout=120)
        assert head.stop() == [], "processes of the head are left"
        head.results.rename(head.results.with_name("gone"))  # the copy must stand on its own
        phase("backup and copy")

        on_cluster = {path.name: path.read_text() for path in (copy / "quickstart" / "tables").glob("*.csv")}
        shutil.rmtree(copy / "quickstart" / "tables")  # made again from the copy alone
        report = subprocess.run(shlex.split(documented("python -m ncstudy report cifar_lt --results results-cluster").replace("cifar_lt", "quickstart").replace("results-cluster", str(copy))),
                                cwd=REPO, env=head.env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
        remade = {path.name: path.read_text() for path in (copy / "quickstart" / "tables").glob("*.csv")}
        assert remade and remade == on_cluster, "the report of the copy differs from the one the cluster wrote"

        ui_port = free_port()
        ui_command = documented("mlflow ui --backend-store-uri sqlite:///results-cluster/mlflow.db").replace("results-cluster", str(copy))
        ui = subprocess.Popen([*shlex.split(ui_command), "--host", "127.0.0.1", "--port", str(ui_port)], cwd=tmp_path,
                              env=head.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        try:
            ui_base = f"http://127.0.0.1:{ui_port}"
            wait_for_url(f"{ui_base}/health", timeout=90)
            on_copy = runs_of(ui_base, "quickstart")
            assert {(r["info"]["run_id"], r["info"]["status"]) for r in on_copy} == {(r["info"]["run_id"], r["info"]["status"]) for r in runs}
            assert figure_bytes(ui_base, children[0]["info"]["run_id"]).startswith(b"\x89PNG")
        finally:
            os.killpg(ui.pid, signal.SIGKILL)
        phase("report and MLflow UI on the copy")
    finally:
        left = head.stop()
        print("ray job test, seconds:", ", ".join(f"{k} {v:.0f}" for k, v in phases.items()))
        shutil.rmtree(root, ignore_errors=True)
    assert left == [], f"processes of the test's head are still running: {left}"
