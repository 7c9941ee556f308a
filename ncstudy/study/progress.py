"""Compact live progress for a study: one line when a trial starts, an epoch line at most every
`every_s` seconds per trial, one line when it ends, each with the study's elapsed time, and an ETA once a trial has ended.
Epochs are counted as completed epochs, 1 to the total, as in epochs.parquet, MLflow and the figures.

A Ray Tune `Callback` (it runs in the driver), used instead of Tune's own wide status tables, which
`run -v` still shows. Tune pickles it with the experiment and `resume` gets that copy back, so its
clock and counters start again in `setup`, and the trials that ended before the resume count as
done: the counter and the ETA are about the work that remains.

On a cluster that may grow it also says when trials wait for nodes, and stops the study when none
comes (ncstudy.study.capacity).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from ncstudy.outputs.formatting import trial_error_line, value_text
from ncstudy.study.capacity import CapacityWatch
from ncstudy.study.console import STUDY_LOG


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _percent(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _value(name: str, value: Any) -> str:
    """An accuracy in percent; a loss (val_loss) as it is."""
    if "loss" in name and value is not None and not (isinstance(value, float) and math.isnan(value)):
        return f"{value:.3f}"
    return _percent(value)


class StudyProgress(Callback):
    capacity: CapacityWatch | None = None  # also for a callback that a study saved before the watch existed

    def __init__(
        self, planned: int, epochs: int, metric: str | list[str], every_s: float = 10.0, capacity: CapacityWatch | None = None
    ):
        self.planned = planned
        self.epochs = epochs
        self.metric = metric
        self.every_s = every_s
        self.capacity = capacity
        self.setup()

    def setup(self, **info) -> None:
        """At the start of every `fit`, the first and each resumed one."""
        self.started = time.monotonic()
        self.last_line: dict[str, float] = {}
        self.ended_before: int | None = None  # trials that had ended before this fit: known at the first step
        self.ended = 0  # trials that ended during this fit
        if self.capacity:
            self.capacity.reset()

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if self.ended_before is None:
            self.ended_before = sum(1 for t in trials if t.status in ("TERMINATED", "ERROR"))
            if self.ended_before:
                self._say(f"resumed: {self.ended_before} of {self.planned} trials had ended, {self.planned - self.ended_before} to go")
        if self.capacity:
            self.capacity.check(trials, self._say)

    def _say(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.0f}s] {text}", file=sys.stdout, flush=True)  # looked up now: Tune pickles callbacks

    def _objectives(self, result: dict) -> str:
        """The objective's value, or each objective's (search.objectives): `val_acc_many 61.0 val_acc_few 12.5`."""
        names = [self.metric] if isinstance(self.metric, str) else self.metric
        return " ".join(f"{name} {_value(name, result.get(name))}" for name in names)

    def _count(self) -> str:
        return f"({(self.ended_before or 0) + self.ended}/{self.planned})"

    def _eta(self) -> str:
        """From the mean wall time per trial ended in this fit (worker start-up included), once one has."""
        remaining = self.planned - (self.ended_before or 0) - self.ended
        if self.ended == 0 or remaining <= 0:
            return ""
        seconds = (time.monotonic() - self.started) / self.ended * remaining
        return f"  ETA {seconds / 60:.1f} min" if seconds >= 90 else f"  ETA {seconds:.0f}s"

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        params = " ".join(f"{_short(k)}={value_text(v)}" for k, v in (trial.config or {}).items())
        self.last_line[trial.trial_id] = time.monotonic()
        self._say(f"trial {trial.trial_id} started   {params}")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        epoch = int(result.get("epoch", 0))
        now = time.monotonic()
        if now - self.last_line.get(trial.trial_id, 0.0) >= self.every_s and epoch < self.epochs:
            self.last_line[trial.trial_id] = now
            self._say(
                f"trial {trial.trial_id} epoch {epoch}/{self.epochs}  "
                f"{self._objectives(result)}{self._eta()}"
            )

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.ended += 1
        result = trial.last_result or {}
        epoch = int(result.get("epoch", 0))
        ended = "finished" if epoch >= self.epochs else f"stopped at epoch {epoch}/{self.epochs}"
        groups = " ".join(f"{g} {_percent(result.get(f'test_acc_{g}'))}" for g in ("all", "many", "medium", "few"))
        test = f"  test: {groups}" if epoch >= self.epochs else ""
        self._say(
            f"trial {trial.trial_id} {ended}  {self._objectives(result)}{test}   "
            f"{self._count()}{self._eta()}"
        )

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        """The error's last line (its class and message); the traceback Tune logs and where Tune keeps
        the whole error go to driver.log (ncstudy.study.console)."""
        self.ended += 1
        epoch = int((trial.last_result or {}).get("epoch", 0))
        error = trial_error_line(trial)
        kept = Path(trial.path) / "error.txt" if getattr(trial, "path", None) else getattr(trial, "error_file", None)
        STUDY_LOG.info("trial %s failed at epoch %d/%d: %s (the whole error: %s)", trial.trial_id, epoch, self.epochs, error, kept)
        self._say(f"trial {trial.trial_id} FAILED at epoch {epoch}/{self.epochs}: {error}  {self._count()}")

