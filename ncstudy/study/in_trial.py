"""A single-worker trial trained inside its Tune trial actor: the engine (ncstudy.engine) run in the
process Tune started for the trial, with the trial's CPU and GPU, reporting through `tune.report`
with a checkpoint each epoch; Tune's checkpointing, FailureConfig and restore give fault tolerance
and resume. No Ray Train controller or worker: one process per trial instead of three (docs/ray.md,
"Which path a trial takes"). Nothing here touches MLflow: the driver logs the trial's run from the
reports Tune receives (ncstudy.study.trial_runs).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import ray
import torch
from ray import tune

from ncstudy.config import StudyConfig
from ncstudy.data.build import build_data, device_splits
from ncstudy.engine.checkpoint import read_checkpoint, write_checkpoint
from ncstudy.engine.loop import EpochEnd, Splits, run_epochs, static_metrics
from ncstudy.engine.state import TrialState


def train_in_trial(config: StudyConfig, source_ref: list | None) -> None:
    """The trial's epochs from its last checkpoint, each reported to Tune with its checkpoint."""
    device = torch.device("cuda" if config.resources.gpus_per_worker > 0 else "cpu")
    data = build_data(config.data, ray.get(source_ref[0]) if source_ref else None)
    splits = Splits(*device_splits(data, config.data, device))
    state = TrialState(config, data, device)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state.restore(read_checkpoint(Path(folder)))
        for earlier in state.reports:  # as ncstudy.study.train_worker does: Tune and MLflow keep each epoch once
            tune.report(earlier)
    static = {**static_metrics(data, 1), "worker_nodes": ray.get_runtime_context().get_node_id()}

    def report(end: EpochEnd) -> None:
        with tempfile.TemporaryDirectory() as folder:
            write_checkpoint(Path(folder), state, end.epoch, end.final, data)
            tune.report(end.metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    run_epochs(config, data, state, state.model, splits, static, report)
