"""`report` beside a running study (issue 22, item 8): it reads what is complete (a Tune file being
written is read again, or done without) and, while a live driver holds the study's lock, lists the
trials that have not ended as running, not interrupted. The study folder is written by hand as a
driver leaves it mid-search (no Ray is started): study.yaml, Tune's experiment state, a trial folder
per trial with params.json, ReportLog's reports, state.json and .lock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from ncstudy.config import load_study
from ncstudy.outputs import results
from ncstudy.outputs.report import build_report, load_results
from ncstudy.outputs.study_folder import LOCK_FILE, StudyLock

QUICKSTART = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"
EPOCHS = 3
DATE = "2026-12-06_07-53-51"
# the finished trial and the one still training (1 of 3 epochs), as a searcher names their folders
FINISHED, RUNNING = "6bc67bd7", "eb43f023"
PARAMS = {
    FINISHED: {"data.imbalance.ratio": 10, "regularizer.lambda_between": 0.2694, "regularizer.lambda_within": 0.0125,
               "regularizer.temperature": None},
    RUNNING: {"data.imbalance.ratio": 50, "regularizer.lambda_between": 0.8459, "regularizer.lambda_within": 0.0607,
              "regularizer.temperature": 0.1},
}  # fmt: skip
# a process that holds the lock as a driver does (StudyLock: exclusive flock, its pid and host in the file)
HOLD_LOCK = """import fcntl, json, os, socket, sys
lock = open(sys.argv[1], "a+")
fcntl.flock(lock, fcntl.LOCK_EX)
lock.truncate(0)
lock.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
lock.flush()
print("held", flush=True)
sys.stdin.read()
"""


def _trial_folder(trial_id: str, counter: int) -> str:
    return f"run_single_worker_trial_{trial_id}_{counter}_data_imbalance_ratio={PARAMS[trial_id]['data.imbalance.ratio']}_{DATE}"


def _report(trial_id: str, epoch: int) -> dict:
    """A report as ReportLog writes it: the metrics, Tune's bookkeeping and the trial's config."""
    return {"epoch": epoch, "val_acc_all": 0.5, "test_acc_all": 0.4, "test_acc_many": 0.6, "test_acc_medium": 0.4,
            "test_acc_few": 0.2, "classes_many": 3, "classes_medium": 4, "classes_few": 3, "trial_id": trial_id,
            "training_iteration": epoch, "config": PARAMS[trial_id]}  # fmt: skip


def _experiment_state(tune_folder: Path, statuses: dict[str, str]) -> None:
    """Tune's experiment state as TuneController.save_to_dir writes it: each trial's JSON state."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.execution.placement_groups import PlacementGroupFactory
    from ray.tune.experiment import Trial
    from ray.tune.utils.serialization import TuneFunctionEncoder

    trial_data = []
    for counter, (trial_id, status) in enumerate(statuses.items(), start=1):
        storage = StorageContext(str(tune_folder.parent), tune_folder.name, trial_dir_name=_trial_folder(trial_id, counter))
        trial = Trial("run_single_worker_trial", config=PARAMS[trial_id], trial_id=trial_id, storage=storage, stub=True)
        trial.placement_group_factory = PlacementGroupFactory([{"CPU": 1}])
        trial.set_status(status)
        trial_data.append(list(trial.get_json_state()))
    state = {"trial_data": trial_data, "runner_data": {}, "stats": {}}
    (tune_folder / f"experiment_state-{DATE}.json").write_text(json.dumps(state, cls=TuneFunctionEncoder))


@pytest.fixture
def study(tmp_path) -> Path:
    """The quickstart, 3 epochs, mid-search: one trial finished, one at epoch 1 of 3 (Tune: RUNNING,
    saved as PENDING; its result.json half copied), state.json `running` and an unheld .lock, as a
    killed driver leaves them."""
    config = load_study(QUICKSTART, [f"train.epochs={EPOCHS}", "metrics.every=0"])
    folder = tmp_path / config.name
    tune_folder = folder / "ray" / "tune"
    tune_folder.mkdir(parents=True)
    (folder / "reports").mkdir()
    (folder / "study.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    for counter, (trial_id, epochs) in enumerate({FINISHED: EPOCHS, RUNNING: 1}.items(), start=1):
        trial = tune_folder / _trial_folder(trial_id, counter)
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps(PARAMS[trial_id], indent=2, sort_keys=True))
        lines = [json.dumps(_report(trial_id, e)) + "\n" for e in range(1, epochs + 1)]
        (folder / "reports" / f"{trial_id}.jsonl").write_text("".join(lines))
        copying = lines[-1][:40] if trial_id == RUNNING else ""  # Tune copies the trial's result.json now
        (trial / "result.json").write_text("".join(lines) + copying)
    _experiment_state(tune_folder, {FINISHED: "TERMINATED", RUNNING: "RUNNING"})
    (folder / "state.json").write_text(json.dumps({"state": "running"}))
    (folder / LOCK_FILE).write_text("")
    return folder


@pytest.fixture
def live_driver(study):
    """Another process holding the study's lock, as a running driver does."""
    command = [sys.executable, "-c", HOLD_LOCK, str(study / LOCK_FILE)]
    holder = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def _statuses(study: Path) -> dict[str, str]:
    trials = load_results(study.parent, study.name).trials
    return dict(zip(trials["trial_id"], trials["status"]))


def _folder_of(study: Path, trial_id: str) -> Path:
    return next((study / "ray" / "tune").glob(f"*_{trial_id}_*"))


def _without_reports(study: Path, trial_id: str) -> None:
    """The trial as it starts: no report yet (ReportLog's or Tune's)."""
    (study / "reports" / f"{trial_id}.jsonl").unlink()
    (_folder_of(study, trial_id) / "result.json").unlink()


def _truncate(file: Path) -> None:
    file.write_text(file.read_text()[: len(file.read_text()) // 2])


def test_a_running_study_lists_its_unended_trials_as_running(study, live_driver, capfd):
    assert _statuses(study) == {FINISHED: "finished", RUNNING: "running"}
    report = (build_report([study.name], study.parent) / "report.md").read_text()
    section = report[report.index("## Study") :].splitlines()
    assert section[2].startswith("**Running now**") and "snapshot" in section[2]
    assert f"Running (epochs reached so far), not in the tables: {RUNNING} (1/{EPOCHS} epochs)." in report
    assert "Interrupted" not in report
    assert "Failed to fetch metrics" not in capfd.readouterr().err  # ExperimentAnalysis's, on the copied result.json


def test_without_a_live_driver_unended_trials_are_interrupted(study):
    """The same folder once the driver has gone (killed: state.json still says running)."""
    assert _statuses(study) == {FINISHED: "finished", RUNNING: "interrupted"}
    report = (build_report([study.name], study.parent) / "report.md").read_text()
    assert "Running now" not in report and f"Interrupted (`python -m ncstudy resume" in report


def test_the_drivers_own_report_is_not_beside_a_running_study(study):
    """The driver reports at the end of its search while it holds the lock itself: Tune's loop is
    over, so a trial that has not ended is interrupted."""
    with StudyLock(study):
        assert _statuses(study) == {FINISHED: "finished", RUNNING: "interrupted"}


@pytest.mark.parametrize("trial_id", [FINISHED, RUNNING])
@pytest.mark.parametrize("cut", [_truncate, lambda file: file.write_text("")], ids=["half", "empty"])
def test_a_params_json_being_written_gives_a_report(study, live_driver, trial_id, cut):
    """Tune writes params.json in place: read beside it, it can stay cut short for longer than the
    retries. A trial with reports (both here) takes its parameters from their `config`."""
    cut(_folder_of(study, trial_id) / "params.json")
    out = build_report([study.name], study.parent)
    trials = load_results(study.parent, study.name).trials.set_index("trial_id")
    assert trials.loc[trial_id, "param.regularizer.lambda_within"] == PARAMS[trial_id]["regularizer.lambda_within"]
    assert "| 0.0125 |" in (out / "report.md").read_text()  # the finished trial's row has its configuration


def test_a_params_json_without_reports_is_listed_without_parameters(study, live_driver):
    """A trial that has just started: Tune is writing its params.json and it has reported nothing."""
    (_folder_of(study, RUNNING) / "params.json").write_text('{\n  "data.imb')
    _without_reports(study, RUNNING)
    out = build_report([study.name], study.parent)
    assert f"{RUNNING} (0/{EPOCHS} epochs)" in (out / "report.md").read_text()
    trials = load_results(study.parent, study.name).trials.set_index("trial_id")
    assert pd.isna(trials.loc[RUNNING, "param.regularizer.lambda_within"])


def test_a_file_finished_during_a_retry_is_read(study, monkeypatch):
    """params.json and the experiment state, cut short at the first read and complete by the next."""
    files = [_folder_of(study, RUNNING) / "params.json", next((study / "ray" / "tune").glob("experiment_state-*.json"))]
    whole = {file: file.read_text() for file in files}
    for file in files:
        _truncate(file)
    finish_writing = SimpleNamespace(sleep=lambda _: [file.write_text(text) for file, text in whole.items()])
    monkeypatch.setattr(results, "time", finish_writing)  # the reader's pause: the writer finishes
    _without_reports(study, RUNNING)  # no config to fall back on
    trials = load_results(study.parent, study.name).trials.set_index("trial_id")
    assert trials.loc[RUNNING, "param.data.imbalance.ratio"] == 50
    assert trials.loc[RUNNING, "status"] == "interrupted"  # Tune's state, not "unfinished" from the reports alone


def test_a_truncated_experiment_state_gives_a_report(study, live_driver):
    _truncate(next((study / "ray" / "tune").glob("experiment_state-*.json")))  # stays so: no Tune statuses
    out = build_report([study.name], study.parent)
    assert f"{RUNNING} (1/{EPOCHS} epochs)" in (out / "report.md").read_text()
    assert _statuses(study) == {FINISHED: "finished", RUNNING: "running"}
