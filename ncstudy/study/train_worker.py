"""The Ray Train worker of a trial: the engine (ncstudy.engine) run on one DDP rank, its epochs
reported through `ray.train.report` with rank 0's checkpoint. Tracking is the driver's business
(ncstudy.study.trial_runs): metrics leave this process only as reports.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch.distributed as dist

from ncstudy.config import StudyConfig
from ncstudy.data.build import StudyData, build_data, device_splits
from ncstudy.engine.checkpoint import read_checkpoint, write_checkpoint
from ncstudy.engine.loop import EpochEnd, Splits, run_epochs, static_metrics
from ncstudy.engine.state import TrialState
from ncstudy.method.regularizers import WorkerSum


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point: `loop_config["study"]` is the trial's resolved config as a dict;
    `loop_config["source"]`, when present, is an object-store reference to the decoded data set,
    shared by every trial on the node instead of decoded (and held) once per trial."""
    config = StudyConfig.model_validate(loop_config["study"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    source_ref = loop_config.get("source")
    data = build_data(config.data, ray.get(source_ref[0]) if source_ref else None)
    splits = Splits(*device_splits(data, config.data, device))

    state = TrialState(config, data, device, WorkerSum(world_size))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state.restore(read_checkpoint(Path(folder)))
    model = ray.train.torch.prepare_model(state.model, move_to_device=False) if world_size > 1 else state.model
    static = {**static_metrics(data, world_size), "worker_nodes": ",".join(worker_nodes(world_size))}
    for earlier in state.reports if checkpoint is not None else []:
        # Restored: say every epoch up to the checkpoint again. An interrupted driver may have stopped
        # before it took the last reports (the worker saves each checkpoint first, and after a second
        # Ctrl-C workers outlive the driver by a few epochs); a trial restored after its last epoch
        # has nothing else to say. The driver keeps the latest report of each epoch; MLflow and ASHA
        # (time attribute `epoch`) take an epoch once.
        ray.train.report(earlier)
    run_epochs(config, data, state, model, splits, static, lambda end: report(end, state, rank, data), rank, world_size)


def worker_nodes(world_size: int) -> list[str]:
    """The Ray node id of every rank (gathered once per trial), so a study records where it ran."""
    node = ray.get_runtime_context().get_node_id()
    if world_size == 1:
        return [node]
    nodes: list[str | None] = [None] * world_size
    dist.all_gather_object(nodes, node)
    return [str(n) for n in nodes]


def report(end: EpochEnd, state: TrialState, rank: int, data: StudyData) -> None:
    """Report the epoch; rank 0 attaches the checkpoint (ncstudy.engine.checkpoint)."""
    if rank != 0:
        ray.train.report(end.metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as folder:
        write_checkpoint(Path(folder), state, end.epoch, end.final, data)
        ray.train.report(end.metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
