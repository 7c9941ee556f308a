"""Results: trials.parquet and epochs.parquet from a Tune ResultGrid, and the report.md table.

The head/medium/tail table follows the many/medium/few convention of Liu et al. (CVPR 2019, OLTR):
accuracies in percent, best per column in bold, an empty group shown as a dash (never 0). Files are
written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ncstudy.metrics import GROUPS

TUNE_BOOKKEEPING = {
    "timestamp", "checkpoint_dir_name", "done", "training_iteration", "date", "time_this_iter_s",
    "time_total_s", "pid", "hostname", "node_ip", "time_since_restore", "iterations_since_restore",
    "checkpoint_path", "should_checkpoint", "experiment_tag", "config",
}  # fmt: skip
TEST_COLUMNS = [f"acc_{g}" for g in ("all", *GROUPS)]
VAL_COLUMNS = [f"val_acc_{g}" for g in ("all", *GROUPS)]
DASH = "-"


def _own_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k not in TUNE_BOOKKEEPING and not k.startswith("config/")}


def collect(grid, run_ids: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs): a row per finished trial with its parameters and final metrics; a row per
    trial per reported epoch. `run_ids` maps Tune trial ids to MLflow child run ids."""
    trial_rows, epoch_frames = [], []
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        if result.error is None and metrics:
            row = {"trial_id": trial_id, "mlflow_run_id": run_ids.get(trial_id)}
            row.update({f"param.{k}": v for k, v in (result.config or {}).items()})
            row.update(_own_metrics(metrics))
            trial_rows.append(row)
        frame = result.metrics_dataframe
        if frame is not None and len(frame):
            own = [c for c in frame.columns if c not in TUNE_BOOKKEEPING and not c.startswith("config/")]
            frame = frame[own].copy()
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


def _percent(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{100 * float(value):.1f}"


def _param_text(value: Any) -> str:
    """A parameter cell; a missing value is a setting of None (e.g. the hard-min temperature)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def shot_table(trials: pd.DataFrame, metric: str, mode: str) -> str:
    """Markdown head/medium/tail table, trials sorted by the objective (best first)."""
    if trials.empty:
        return "_No trial finished._\n"
    ordered = trials.sort_values(metric, ascending=(mode == "min"), na_position="last")
    params = [c for c in trials.columns if c.startswith("param.")]
    score_columns = [metric, *TEST_COLUMNS]
    best = {c: ordered[c].max() for c in score_columns if c in ordered and c.startswith(("val_acc", "acc_"))}
    header = ["#", "trial", *(c.removeprefix("param.") for c in params), f"val {metric.removeprefix('val_')}", "All", "Many", "Medium", "Few", "classes many/med/few"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for position, (_, row) in enumerate(ordered.iterrows(), start=1):
        cells = [str(position), str(row["trial_id"]), *(_param_text(row[c]) for c in params)]
        for column in score_columns:
            text = _percent(row.get(column)) if column.startswith(("val_acc", "acc_")) else f"{row.get(column):.4g}"
            if column in best and text != DASH and row.get(column) == best[column]:
                text = f"**{text}**"
            cells.append(text)
        counts = [row.get(f"classes_{g}") for g in GROUPS]
        cells.append("/".join(DASH if c is None or pd.isna(c) else str(int(c)) for c in counts))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report_markdown(name: str, trials: pd.DataFrame, metric: str, mode: str, failed: int, planned: int) -> str:
    """report.md: a summary line and the head/medium/tail table."""
    finished = len(trials)
    summary = f"{finished} of {planned} trials finished"
    if failed:
        summary += f", {failed} failed"
    return (
        f"# Study `{name}`\n\n{summary}. Objective: `{metric}` ({mode}) on the validation split; "
        f"the accuracy columns are on the balanced test set, in percent; groups are many-shot (more than "
        f"`metrics.many_gt` training images), medium and few-shot (fewer than `metrics.few_lt`), each the "
        f"mean of its classes' accuracies; `{DASH}` marks an empty group; bold is the best per column.\n\n"
        f"## Head / medium / tail accuracy\n\n{shot_table(trials, metric, mode)}"
    )
