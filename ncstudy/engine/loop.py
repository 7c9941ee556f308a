"""A trial's epochs, one after another, each handed to the runner's callback (docs/design.md,
"The engine"). The main stage, then cRT; every epoch adds validation metrics by frequency group, and
every `metrics.every` epochs and the last the NC measurement on the training features and test
accuracy. A report's `epoch` counts completed epochs, 1 to the total, everywhere a reader sees it
(console, epochs.parquet, MLflow steps, figures); settings such as `start_epoch` and `drw_epoch`
are 0-based loop indices (LDAM-DRW's convention).

Metric names have one rule (docs/outputs.md, "Metric names"): a measurement of a split carries the split
as its prefix, `train_` (the training images in eval mode, their features' NC metrics), `val_` or
`test_`, e.g. `test_acc_all`, `val_acc_few`, `train_nc1`; the epoch's optimisation is unprefixed:
`lr`, `loss` (the objective's mean over the epoch's batches) and its terms `loss_sup`,
`loss_within`, `loss_between`, `loss_center`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ncstudy.config import StudyConfig
from ncstudy.data.build import StudyData
from ncstudy.data.loader import DeviceSplit
from ncstudy.engine.evaluation import evaluate_split, prefixed
from ncstudy.engine.measure import Measurement, measure_collapse
from ncstudy.engine.recipe import use_bf16
from ncstudy.engine.state import TrialState
from ncstudy.engine.step import crt_epoch, train_epoch


class TrialDiverged(FloatingPointError):
    """A training loss or the validation logits became non-finite: the weights are lost, and a
    restart from the last checkpoint would diverge the same way (the epoch's data order is seeded).
    One message argument, so that Ray can pickle it back to the driver."""

    @classmethod
    def at(cls, epoch: int, what: str) -> "TrialDiverged":
        advice = "lower train.lr, raise train.warmup_epochs or lower the regularizer weights"
        return cls(f"the trial diverged in epoch {epoch + 1}: {what} ({advice})")


def _check_finite(epoch: int, metrics: dict[str, Any]) -> None:
    bad = [f"{k} = {v}" for k, v in metrics.items() if k.startswith("loss") and isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise TrialDiverged.at(epoch, ", ".join(bad))


@dataclass
class EpochEnd:
    """What a runner receives after each epoch: the report (already in `state.reports`), the loop
    index, and at the last epoch its measurement (for the checkpoint's collapse.npz)."""

    epoch: int
    metrics: dict[str, Any]
    final: Measurement | None


@dataclass
class Splits:
    """This worker's share of the three splits, on the device (ncstudy.data.build.device_splits)."""

    train: DeviceSplit
    val: DeviceSplit
    test: DeviceSplit


def static_metrics(data: StudyData, world_size: int) -> dict[str, Any]:
    """The values every report of the trial repeats: the data split's fingerprint and sizes."""
    static: dict[str, Any] = {"data_fingerprint": data.fingerprint, "num_train": len(data.train), "world_size": world_size}
    static.update({f"classes_{name}": len(members) for name, members in data.groups.items()})
    if data.counts_note:  # training counts below the profile's: validation images held out of its share
        static["counts_note"] = data.counts_note
    return static


def run_epochs(
    config: StudyConfig, data: StudyData, state: TrialState, model: nn.Module, splits: Splits, static: dict[str, Any],
    on_epoch: Callable[[EpochEnd], None], rank: int = 0, world_size: int = 1,
) -> None:  # fmt: skip
    """From `state.next_epoch` to the last epoch. `model` is what trains (state.model, or its DDP
    wrapper); `on_epoch` runs after each epoch, once the report is in `state.reports`."""
    bf16 = use_bf16(config.train, splits.train.labels.device)
    if config.train.compile != "none":  # the training passes; evaluation runs the eager state.model
        model = torch.compile(model, mode=config.train.compile)
    total_epochs = config.train.total_epochs
    for epoch in range(state.next_epoch, total_epochs):
        started = time.perf_counter()
        metrics: dict[str, Any] = {"epoch": epoch + 1, **static}
        if epoch < config.train.epochs:
            metrics.update(train_epoch(epoch, config, model, state, splits.train, data, rank, world_size))
        else:
            if state.crt_optimizer is None:
                state.start_crt()
            metrics.update(crt_epoch(epoch - config.train.epochs, config, state, splits.train, data, rank, world_size))
        _check_finite(epoch, metrics)
        validation = evaluate_split(state.model, splits.val, data, bf16, rank, world_size)
        if validation.non_finite_samples:
            raise TrialDiverged.at(epoch, f"the model's logits are not finite on {validation.non_finite_samples} validation images")
        metrics.update(prefixed(validation.metrics, "val_"))
        last = epoch == total_epochs - 1
        measurement = None
        if last or (config.metrics.every and (epoch + 1) % config.metrics.every == 0):
            measurement = measure_collapse(state, splits.train, splits.test, data, bf16, rank, world_size, epoch)
            metrics.update(measurement.metrics)
        metrics["epoch_time_s"] = time.perf_counter() - started
        state.reports.append(metrics)
        state.next_epoch = epoch + 1
        on_epoch(EpochEnd(epoch, metrics, measurement if last else None))
