"""`python -m ncstudy train STUDY.yaml`: one configuration (the study's base config with its `--set`
overrides) trained by the engine in this process. No Ray, no Optuna, no search: the debugging path,
and the one a GPU machine without Ray can run. MLflow is imported only when tracking is on.

It writes what a study writes for one trial, so `ncstudy report NAME` reads it like a study:
RESULTS/<name>/study.yaml, epochs.parquet (a row per epoch, the same columns as a study's) and
trials.parquet (one row, trial 0), both rewritten after every epoch with status `unfinished` until
the last epoch makes it `finished`; checkpoint/ (ncstudy.engine.checkpoint, replaced after every
epoch); figures/ of the trial at the end unless `--no-figures` (then matplotlib is never imported); and
one MLflow run unless `--no-tracking`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ncstudy.atomic import replaced_atomically
from ncstudy.config import StudyConfig, check_study_name, dump_yaml
from ncstudy.data.build import build_data, device_splits
from ncstudy.engine.checkpoint import write_checkpoint
from ncstudy.engine.checkpoint_files import COLLAPSE_FILE
from ncstudy.engine.loop import EpochEnd, Splits, run_epochs, static_metrics
from ncstudy.engine.state import TrialState
from ncstudy.errors import StudyError
from ncstudy.outputs.figures import trial_figures

TRIAL_ID = "train"  # the trial_id of the one row: no Tune trial gave it an id
RUNNER_MARK = "single_run.txt"  # marks a folder `ncstudy train` wrote, the only kind --restart replaces
STUDY_MARKS = ("ray", "optuna.db", "state.json")  # a study's folder: never replaced from here


@dataclass
class SingleRunOutcome:
    folder: Path
    last: dict[str, Any]
    tracking_uri: str | None


def choose_device(requested: str | None) -> torch.device:
    """`cuda` when one is visible and nothing else was asked for; a request for a missing CUDA is an error."""
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise StudyError("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False)")
    return torch.device(requested)


def prepare_folder(results: Path, name: str, restart: bool) -> Path:
    folder = results / check_study_name(name)
    if folder.exists():
        if any((folder / mark).exists() for mark in STUDY_MARKS):
            raise StudyError(f"{folder}: a study of this name is there; `ncstudy train` never replaces one (--set name=...)")
        if not restart:
            raise StudyError(f"{folder}: exists; --restart replaces it, or choose another name with --set name=...")
        if not (folder / RUNNER_MARK).exists():
            raise StudyError(f"{folder}: not written by `ncstudy train`; move it away or choose another name")
        shutil.rmtree(folder)
    (folder / "checkpoint").mkdir(parents=True)
    (folder / RUNNER_MARK).write_text("written by `python -m ncstudy train`\n")
    return folder


def train_single(
    study: StudyConfig, results: Path, device: str | None = None, tracking: bool = True, restart: bool = False,
    figures: bool = True,
) -> SingleRunOutcome:
    """Train the study's base config once; see the module docstring for what it writes."""
    target = choose_device(device)
    data = build_data(study.data)  # a missing data folder fails here, before the folder is made
    folder = prepare_folder(results.resolve(), study.name, restart)
    (folder / "study.yaml").write_text(dump_yaml(study))
    run_log, uri = start_tracking(study, results.resolve(), folder) if tracking else (None, None)
    state = TrialState(study, data, target)
    splits = Splits(*device_splits(data, study.data, target))
    rows: list[dict[str, Any]] = []
    total = study.train.total_epochs

    def on_epoch(end: EpochEnd) -> None:
        write_checkpoint(folder / "checkpoint", state, end.epoch, end.final, data)
        rows.append(end.metrics)
        write_tables(folder, rows, total)
        if run_log is not None:
            run_log.log_report(end.metrics)
        print(f"epoch {end.epoch + 1}/{total}  val_acc_all {100 * end.metrics['val_acc_all']:.1f}", flush=True)

    try:
        run_epochs(study, data, state, state.model, splits, static_metrics(data, 1), on_epoch)
    except BaseException as error:
        if run_log is not None:
            finish_tracking(run_log, folder, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    if figures:
        trial_figures(folder / "checkpoint" / COLLAPSE_FILE, folder / "figures")
    if run_log is not None:
        finish_tracking(run_log, folder, "FINISHED")
    return SingleRunOutcome(folder, rows[-1], uri)


def write_tables(folder: Path, rows: list[dict[str, Any]], total_epochs: int) -> None:
    """epochs.parquet and the one-row trials.parquet, in a study's columns (ncstudy.outputs.results)."""
    epochs = pd.DataFrame(rows)
    epochs = epochs.assign(trial=0, trial_id=TRIAL_ID)[["trial", "trial_id", *epochs.columns]]
    last = rows[-1]
    status = "finished" if last["epoch"] == total_epochs else "unfinished"
    trial = {"trial": 0, "trial_id": TRIAL_ID, "status": status, "epochs_done": len(rows), "error": None, **last}
    trial["checkpoint_path"] = str(folder / "checkpoint")
    for frame, name in ((epochs, "epochs.parquet"), (pd.DataFrame([trial]), "trials.parquet")):
        with replaced_atomically(folder / name) as temporary:
            frame.to_parquet(temporary, index=False)


def start_tracking(study: StudyConfig, results: Path, folder: Path):
    """One MLflow run (not nested: there is no study around it), named and tagged as `ncstudy train`'s."""
    from ncstudy.study.tracking import TrialRunLog, study_tracker

    tracker = study_tracker(study, results)
    run_id = tracker.start_study(study.name, study.model_dump(mode="json"), folder / "study.yaml")
    tracker.client.set_tag(run_id, "ncstudy.runner", "train")
    return TrialRunLog(tracker.uri, run_id, study.data.model_dump(mode="json")), tracker.uri


def finish_tracking(run_log, folder: Path, status: str) -> None:
    """The final checkpoint's arrays and the figures drawn from them (when it finished; none with
    `--no-figures`), then the run's status."""
    from mlflow.tracking import MlflowClient

    if status == "FINISHED":
        run_log.log_final(folder / "checkpoint", figures=folder / "figures")
    MlflowClient(tracking_uri=run_log.uri).set_terminated(run_log.run_id, status=status)
