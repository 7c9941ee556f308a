"""Results: every trial's parameters and reports, read from Ray Tune's experiment folder
(RESULTS/<name>/ray/tune/<trial>/params.json and result.json), so the same reader serves a finished
study, a running one and one that was cut short; and trials.parquet / epochs.parquet written from it.

A trial's status comes from Tune's saved experiment state (`ray.tune.ExperimentAnalysis`) and its
reports: finished (Tune ended it after its last epoch, main stage plus cRT), stopped (Tune ended it
earlier: the ASHA scheduler), failed (it raised or its process was lost, as Tune's state or
ReportLog's record of the failure says, ncstudy.outputs.failures; `error` holds the error's last line), interrupted
(the study was stopped while it ran or waited: `resume` continues it). Without Tune's state (a
folder copied without it) a trial is finished when its reports reach the last epoch, else
unfinished. Read beside a driver that is running the study now (`read_experiment(..., running=True)`,
ncstudy.outputs.report.driver_alive), a trial that has not ended is running instead of interrupted
or unfinished: the driver is training it, or will. Reported epochs count completed epochs, 1 to the
total. Reports repeated after a worker restart (the epochs since the last checkpoint) are kept once,
the latest. Files written here are written to a temporary name and renamed, so a reader never sees
half a file; Tune's are not (`_settled`).

Trials are listed in the order Tune created them, numbered 0, 1, 2, ... in a `trial` column (the
first), and epochs by trial, then epoch, so every read of a folder gives the same rows in the same
order. The order is Tune's creation counter, which Tune writes into each trial folder's name,
<trainable>_<trial id>_<counter>_<params>_<date> (ray.tune Trial._generate_dirname and the
experiment tag of its trial generators): counted from 0 by the generator of grid searches and plain
repeats, whose ids end in it too (run_trial_e6fa5_00001_1_...), from 1 by a searcher's, whose ids
are random (run_trial_1ccf35cd_1_...), so the ids alone cannot give it. A searcher's counter is
saved with its state, so a resumed study continues it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pandas as pd
from ray.tune import Callback

from ncstudy.atomic import replaced_atomically
from ncstudy.outputs.failures import forget_failure, record_failure, recorded_failure
from ncstudy.outputs.formatting import trial_error_line

TUNE_BOOKKEEPING = {
    "timestamp", "checkpoint_dir_name", "done", "training_iteration", "date", "time_this_iter_s",
    "time_total_s", "pid", "hostname", "node_ip", "time_since_restore", "iterations_since_restore",
    "should_checkpoint", "experiment_tag", "config",
}  # fmt: skip


REPORTS = "reports"  # RESULTS/<name>/reports/<trial id>.jsonl
# a trial folder's name: <trainable>_<trial id>_<creation counter>_...; the id is 8 hex digits
# (a searcher's) or 5 hex digits, "_" and the 5-digit counter (grid search and plain repeats)
TRIAL_FOLDER = re.compile(r"_([0-9a-f]{8}|[0-9a-f]{5}_\d{5})_(\d+)_")
# a file of Tune's that will not parse is read again, this many times in all, this far apart
READ_TRIES = 4
READ_PAUSE_S = 0.05

T = TypeVar("T")


def _settled(read: Callable[[], T]) -> T | None:
    """read(), tried again (READ_TRIES, READ_PAUSE_S apart) while it raises OSError or ValueError
    (JSONDecodeError, UnicodeDecodeError); None if it never succeeds. Tune writes params.json in
    place (json.dump into the open file) and copies its experiment state and result.json into the
    study folder in place too, so beside a running study any of them can be empty or cut short for
    a moment; one that stays so is broken, and the caller does without it."""
    for attempt in range(READ_TRIES):
        try:
            return read()
        except (OSError, ValueError):
            if attempt < READ_TRIES - 1:
                time.sleep(READ_PAUSE_S)
    return None


class ReportLog(Callback):
    """Appends every report a trial makes to RESULTS/<name>/reports/<trial id>.jsonl, flushed at
    once, in the driver. Tune's own result.json is not enough: Tune writes it in a staging folder of
    the Ray session and copies it into the study folder now and then, and a resumed trial starts a
    new one there (seen: a trial interrupted after 2 epochs and resumed kept epochs 3 to 12 only).
    The folder is derived from the trial's storage path (STUDY/ray/tune/<trial>), which `resume`
    sets anew, so a moved results folder is written in its new place."""

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        folder = Path(trial.path).parents[2] / REPORTS
        folder.mkdir(exist_ok=True)
        with open(folder / f"{trial.trial_id}.jsonl", "a") as log:
            log.write(json.dumps(result, default=str) + "\n")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        """The failure and its cause, recorded beside the reports (ncstudy.outputs.failures): Tune's
        saved state can miss it."""
        record_failure(Path(trial.path).parents[2], trial)  # a storage fault raises there: the study stops

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        """A trial started again (`resume` continues one whose process was lost) has not failed."""
        forget_failure(Path(trial.path).parents[2], trial.trial_id)


def _reports(trial_folder: Path, trial_id: str) -> list[dict]:
    """The trial's reports: ReportLog's file, or Tune's result.json for a study written before it."""
    result_file = trial_folder.parents[2] / REPORTS / f"{trial_id}.jsonl"
    if not result_file.exists():
        result_file = trial_folder / "result.json"
    if not result_file.exists():
        return []
    rows = []
    for line in result_file.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # the line being written when the study was killed
            continue
    return rows


def tune_statuses(tune_folder: Path) -> dict[str, tuple[str, str, str | None]]:
    """trial folder name -> (trial id, Tune's status, the last line of its error or None), from the
    experiment state Tune saved (`_settled`: Tune may be writing it now); empty where there is none
    yet, or where it stays unreadable (then statuses are told from the reports alone)."""
    if not any(tune_folder.glob("experiment_state-*.json")):
        return {}
    analysis = _settled(lambda: _experiment_analysis(tune_folder))
    if analysis is None:
        return {}
    statuses = {}
    for trial in analysis.trials:
        error = None
        if trial.status == "ERROR":
            error = trial_error_line(trial)
        statuses[Path(trial.path).name] = (trial.trial_id, trial.status, error)
    return statuses


def _experiment_analysis(tune_folder: Path):
    """Tune's saved experiment state, as `ray.tune.ExperimentAnalysis`. It also reads every trial's
    result.json into a data frame, which this module does not use (the reports are ReportLog's), and
    warns of each it cannot parse: beside a running study, the one Tune is copying now. Those
    warnings are held back; a state that does not parse still raises."""
    from ray.tune import ExperimentAnalysis

    logger = logging.getLogger(ExperimentAnalysis.__module__)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return ExperimentAnalysis(str(tune_folder))
    finally:
        logger.setLevel(level)


def _trial_id(folder: Path) -> str:
    """Without Tune's state: the id in Tune's result.json, else the folder name's (TRIAL_FOLDER)."""
    tune_reports = [line for line in (folder / "result.json").read_text().splitlines() if line.strip()] if (folder / "result.json").exists() else []
    try:
        return str(json.loads(tune_reports[-1])["trial_id"])
    except (IndexError, ValueError, KeyError):
        return TRIAL_FOLDER.search(folder.name)[1]


def _creation_order(folder: Path) -> tuple[float, str]:
    """A trial folder's sort key: Tune's creation counter in its name (TRIAL_FOLDER), then the name
    (two attempts of one trial, the first lost to an interruption before Tune saved it, share the
    counter); a folder not named by Tune goes last."""
    match = TRIAL_FOLDER.search(folder.name)
    return (int(match[2]) if match else math.inf, folder.name)


def _status(tune_status: str | None, complete: bool, running: bool) -> str:
    """A trial's status (module docstring). One that has not ended (Tune has it running, pending or
    paused, or saved no state since it started) is running while a driver runs the study."""
    if tune_status == "ERROR":
        return "failed"
    if tune_status == "TERMINATED":
        return "finished" if complete else "stopped"
    if tune_status is None and complete:
        return "finished"
    if running:
        return "running"
    return "unfinished" if tune_status is None else "interrupted"


def _params(folder: Path, reports: list[dict]) -> dict:
    """The trial's searched parameters: its params.json (`_settled`); where that stays unreadable,
    the `config` Tune puts in each report (the same dict; params.json is its dump with sorted keys);
    {} where the trial has no report either, one that has just started: it is listed, with its
    epochs, but without parameters. A finished trial has reports, so no table row lacks its
    configuration."""
    params = _settled(lambda: json.loads((folder / "params.json").read_text()))
    if params is not None:
        return params
    configs = [r["config"] for r in reports if isinstance(r.get("config"), dict)]
    return dict(sorted(configs[-1].items())) if configs else {}


def read_experiment(tune_folder: Path, total_epochs: int, running: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs): a row per trial in creation order (trial, trial_id, status, epochs_done,
    error, param.*, its last report, checkpoint_path); a row per trial per reported epoch, by trial
    then epoch (trial, trial_id, the report). `running`: a driver is running the study now, so a
    trial that has not ended is running (`_status`)."""
    statuses = tune_statuses(tune_folder)
    trial_rows, epoch_frames = [], []
    for folder in sorted((p for p in tune_folder.glob("*") if (p / "params.json").exists()), key=_creation_order):
        trial_id, tune_status, error = statuses.get(folder.name, (_trial_id(folder), None, None))
        failure = recorded_failure(folder.parents[2], trial_id)
        if failure is not None and tune_status not in ("TERMINATED", "ERROR"):  # ReportLog.on_trial_error
            tune_status, error = "ERROR", failure["error"]
        reports = _reports(folder, trial_id)
        params = _params(folder, reports)
        by_epoch = {int(r["epoch"]): r for r in reports if "epoch" in r}  # the latest report of each epoch
        last = by_epoch[max(by_epoch)] if by_epoch else {}
        status = _status(tune_status, bool(by_epoch) and max(by_epoch) == total_epochs, running)
        row = {"trial": len(trial_rows), "trial_id": trial_id, "status": status, "epochs_done": len(by_epoch), "error": error}
        row.update({f"param.{k}": v for k, v in params.items()})
        row.update({k: v for k, v in last.items() if k not in TUNE_BOOKKEEPING and k != "trial_id"})
        checkpoint = checkpoint_folder(folder, last)
        if checkpoint is not None:
            row["checkpoint_path"] = checkpoint
        trial_rows.append(row)
        if by_epoch:
            kept = [{k: v for k, v in by_epoch[e].items() if k not in TUNE_BOOKKEEPING | {"trial_id"}} for e in sorted(by_epoch)]
            frame = pd.DataFrame(kept).drop(columns=["checkpoint_path"], errors="ignore")
            epoch_frames.append(frame.assign(trial=row["trial"], trial_id=trial_id)[["trial", "trial_id", *frame.columns]])
    trials = pd.DataFrame(trial_rows)
    epochs = pd.concat(epoch_frames, ignore_index=True) if epoch_frames else pd.DataFrame()
    return trials, epochs


def checkpoint_folder(trial_folder: Path, report: dict) -> str | None:
    """The checkpoint saved with `report`: the path a multi-worker trial reports (Ray Train's storage,
    ray.tune.integration.ray_train), else the folder Tune keeps in the trial's folder for a
    single-worker trial; None for a report without one."""
    if report.get("checkpoint_path"):
        return str(report["checkpoint_path"])
    if report.get("checkpoint_dir_name"):
        return str(trial_folder / report["checkpoint_dir_name"])
    return None


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with replaced_atomically(path) as temporary:
        frame.to_parquet(temporary, index=False)


def write_text(text: str, path: Path) -> None:
    with replaced_atomically(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
