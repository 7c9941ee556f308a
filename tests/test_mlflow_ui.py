"""The study's experiment as a user sees it in the real MLflow UI: `mlflow server` on 127.0.0.1 over a
small real store written by ncstudy.study.tracking, read by headless Chromium (`--dump-dom`, the DOM
after the page's own requests). MLflow 3.17 opened it on an empty GenAI overview (traces, tokens,
"Detect issues"), its trials folded under the study's run with names cut after about 15 characters,
and a trial's "Model metrics" tab drew flat charts of its constants. Slow (the server's start-up and
a browser): CI runs it with -m slow; skipped where Chromium is not installed."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ncstudy.study.tracking import StudyTracker, TrialRunLog, experiment_page, trial_run_name

pytestmark = [
    pytest.mark.slow,  # about a minute: MLflow's server start-up and three page loads
    pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Chromium (Debian: apt-get install chromium)"),
]
PARAMS = {"data.imbalance.ratio": 100, "regularizer.lambda_within": 0.0026345, "regularizer.lambda_between": 0.17234,
          "regularizer.temperature": 0.5}  # fmt: skip
CONSTANTS = {"num_train": 276, "world_size": 1, "classes_many": 3, "classes_medium": 4, "classes_few": 3}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _store(folder: Path) -> tuple[str, str, str]:
    """(uri, experiment id, trial run id) of a study with one trial of three epochs, logged as the driver logs it."""
    tracker = StudyTracker(f"sqlite:///{folder / 'mlflow.db'}", "ui-study", artifact_root=folder / "mlartifacts")
    config = folder / "study.yaml"
    config.write_text("name: ui-study\n")
    parent = tracker.start_study("ui-study", {"name": "ui-study"}, config)
    run_id = tracker.start_trial(parent, "ui-study", "t0", PARAMS, trial_run_name(PARAMS, "t0", several_seeds=False))
    log = TrialRunLog(tracker.uri, run_id)
    for epoch in (1, 2, 3):
        log.log_report({"epoch": epoch, **CONSTANTS, "data_fingerprint": "abc", "val_acc_all": 0.5 + epoch / 10,
                        "loss": 2.0 / epoch})  # fmt: skip
    tracker.finish(run_id)
    tracker.finish(parent)
    return tracker.uri, tracker.experiment_id, run_id


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """(the UI's address, experiment id, trial run id): `mlflow server` over the store, stopped afterwards."""
    folder = tmp_path_factory.mktemp("mlflow-ui")
    uri, experiment_id, run_id = _store(folder)
    address = f"http://127.0.0.1:{_free_port()}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
               "--port", address.rsplit(":", 1)[1], "--workers", "1"]  # fmt: skip
    log = folder / "server.log"
    server = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_serving(address, server, log)
        yield address, experiment_id, run_id
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started, in its own session
        server.wait(timeout=60)


def _wait_until_serving(address: str, server: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, f"mlflow server exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(address, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"mlflow server not serving in {timeout}s:\n{log.read_text()[-3000:]}"
        time.sleep(1)


def _rendered(url: str, profile: Path) -> str:
    """The page's text once its scripts and requests have run (Chromium's virtual time), without
    its styles, scripts, tags and repeated white space."""
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--window-size=1600,1000",
               "--virtual-time-budget=15000", "--dump-dom", url]  # fmt: skip
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    text = re.sub(r"<[^>]*>", " ", re.sub(r"<(style|script)\b.*?</\1>", " ", dom, flags=re.S))
    return " ".join(text.split())


def test_the_printed_link_opens_the_runs_table_with_the_trial_s_short_name(ui, tmp_path):
    address, experiment_id, _ = ui
    page = _rendered(experiment_page(address, experiment_id, "val_acc_all", "max"), tmp_path / "profile")
    assert "Detect Issues" not in page and "Token Usage" not in page  # not the GenAI overview
    assert "matching runs" in page  # the runs table
    assert trial_run_name(PARAMS, "t0", several_seeds=False) in page  # listed flat, not folded under the study's run


def test_a_trial_s_model_metrics_are_the_values_that_move(ui, tmp_path):
    address, experiment_id, run_id = ui
    url = f"{address}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics?workflowType=machine_learning"
    page = _rendered(url, tmp_path / "profile")
    assert "Model metrics (2)" in page, page[:3000]  # val_acc_all and loss: no chart of a constant, nor of the epoch
