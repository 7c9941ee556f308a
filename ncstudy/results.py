"""Results: every trial's parameters and reports, read from Ray Tune's experiment folder
(RESULTS/<name>/ray/tune/<trial>/params.json and result.json), so the same reader serves a finished
study, a running one and one that was cut short; and trials.parquet / epochs.parquet written from it.

A trial is finished when its last report is the last epoch (main stage plus cRT), stopped when the
scheduler (ASHA) ended it early, unfinished otherwise (running, killed, failed). Reports repeated
after a worker restart (the epochs since the last checkpoint) are kept once, the latest. Files are
written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

TUNE_BOOKKEEPING = {
    "timestamp", "checkpoint_dir_name", "done", "training_iteration", "date", "time_this_iter_s",
    "time_total_s", "pid", "hostname", "node_ip", "time_since_restore", "iterations_since_restore",
    "should_checkpoint", "experiment_tag", "config",
}  # fmt: skip


def _reports(trial_folder: Path) -> list[dict]:
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


def read_experiment(
    tune_folder: Path, total_epochs: int, stopped: set[str] = frozenset()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs): a row per trial (trial_id, status finished/stopped/unfinished, epochs_done,
    param.*, its last report, checkpoint_path); a row per trial per reported epoch. `stopped`: the
    ids of trials the scheduler ended early (Tune's result grid knows them; trials.parquet keeps them)."""
    trial_rows, epoch_frames = [], []
    for folder in sorted(p for p in tune_folder.glob("*") if (p / "params.json").exists()):
        params = json.loads((folder / "params.json").read_text())
        reports = _reports(folder)
        trial_id = reports[-1]["trial_id"] if reports else folder.name.split("_")[2]
        by_epoch = {int(r["epoch"]): r for r in reports if "epoch" in r}  # the latest report of each epoch
        last = by_epoch[max(by_epoch)] if by_epoch else {}
        finished = bool(by_epoch) and max(by_epoch) == total_epochs - 1
        status = "finished" if finished else "stopped" if trial_id in stopped else "unfinished"
        row = {"trial_id": trial_id, "status": status, "epochs_done": len(by_epoch)}
        row.update({f"param.{k}": v for k, v in params.items()})
        row.update({k: v for k, v in last.items() if k not in TUNE_BOOKKEEPING and k != "trial_id"})
        trial_rows.append(row)
        if by_epoch:
            frame = pd.DataFrame([{k: v for k, v in r.items() if k not in TUNE_BOOKKEEPING} for r in by_epoch.values()])
            frame = frame.drop(columns=["checkpoint_path"], errors="ignore")
            frame["trial_id"] = trial_id
            epoch_frames.append(frame)
    trials = pd.DataFrame(trial_rows)
    epochs = pd.concat(epoch_frames, ignore_index=True) if epoch_frames else pd.DataFrame()
    return trials, epochs


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Atomic write: a temporary file in the same folder, then rename."""
    temporary = path.with_suffix(".parquet.tmp")
    frame.to_parquet(temporary, index=False)
    os.replace(temporary, path)


def write_text(text: str, path: Path) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
