"""The per-worker training loop that Ray Train runs for one trial.

One epoch: a seeded order of the long-tailed training set (sharded across DDP workers), the base loss
(re-weighted from the DRW epoch when configured), and from `regularizer.start_epoch` on
lambda_W * L_W + lambda_B * L_B (+ the centre-loss baseline) on the pooled features (Liu et al.,
AISTATS 2023, Eq. 6). An optional cRT stage (Kang et al., ICLR 2020) follows: the backbone frozen,
the classifier re-initialized and trained on class-balanced batches. Every epoch reports validation
accuracy by frequency group and saves a checkpoint; the last adds test accuracy by group and the
neural-collapse metrics of the training features. A report's `epoch` counts completed epochs (1 to
the total), everywhere a reader sees it: console, epochs.parquet, MLflow steps, figures; settings
such as `start_epoch` and `drw_epoch` are 0-based loop indices (LDAM-DRW's convention). Metrics leave only through `ray.train.report`:
tracking is the driver's business (see ncstudy.tracking.MlflowReportCallback).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ncstudy.checkpoint_files import CHECKPOINT_FILE, COLLAPSE_FILE, FIGURES
from ncstudy.config import RegularizerConfig, StudyConfig
from ncstudy.data.build import StudyData, build_data, device_splits
from ncstudy.data.loader import DeviceSplit, epoch_order
from ncstudy.losses import build_loss, class_balanced_weights, drw_weights
from ncstudy.engine.evaluation import evaluate_split, prefixed
from ncstudy.figures import angle_heatmap, nc_curves, norm_bars
from ncstudy.models import build_model
from ncstudy.engine.recipe import Mix, autocast, crt_learning_rate, draw_mix, learning_rate, use_bf16
from ncstudy.regularizers import ONE_WORKER, NeuralCollapseRegularizer, SampleClasses, WorkerSum



def regularizer_phase(epoch: int, config: RegularizerConfig) -> str:
    """`on` from start_epoch; before it `off` (no regularizer at all, docs/design.md) or, with
    `before_start: frozen_centres`, `frozen`: the released code's behaviour, where L_W (and the centre
    loss) pull the features towards the initial centres, which do not move yet (Pepper-lll/NCfeature,
    train.py passes no centre optimizer before `start_ft`, engine.py still adds the terms)."""
    if not any(w > 0 for w in (config.lambda_within, config.lambda_between, config.lambda_center)):
        return "off"
    if epoch >= config.start_epoch:
        return "on"
    return "frozen" if config.before_start == "frozen_centres" else "off"


class TrialState:
    """Model, regularizer, loss and optimizers of one worker, with checkpoint save and restore."""

    def __init__(self, config: StudyConfig, data: StudyData, device: torch.device, workers: WorkerSum = ONE_WORKER):
        torch.manual_seed(config.train.seed)
        self.config = config
        self.model = build_model(config.model, data.in_channels, data.num_classes).to(device)
        if device.type == "cuda" and config.model.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if workers.world_size > 1 and config.model.sync_batchnorm and device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)  # same state-dict keys
        generator = torch.Generator().manual_seed(config.train.seed + 1)
        self.regularizer = NeuralCollapseRegularizer(
            config.regularizer, data.num_classes, self.model.feature_dim, generator, workers
        ).to(device)
        self.loss = build_loss(
            config.loss.name,
            data.train_counts,
            focal_gamma=config.loss.focal_gamma,
            ldam_max_margin=config.loss.ldam_max_margin,
            ldam_scale=config.loss.ldam_scale,
            tau=config.loss.tau,
        ).to(device)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=config.train.lr,
            momentum=config.train.momentum,
            weight_decay=config.train.weight_decay,
        )
        self.crt_optimizer: torch.optim.Optimizer | None = None
        self.history: list[dict[str, float]] = []  # NC metrics per evaluated epoch (for nc_curves)
        self.reports: list[dict[str, Any]] = []  # every epoch's report so far, repeated when the trial is restored
        self.next_epoch = 0

    def class_weights(self, epoch: int, counts: list[int]) -> torch.Tensor | None:
        """Class-balanced weights from the start, from the DRW epoch, or none (Cao et al. 2019)."""
        loss = self.config.loss
        if loss.reweight == "class_balanced":
            return class_balanced_weights(counts, loss.cb_beta)
        if loss.reweight == "drw":
            return drw_weights(counts, epoch, loss.drw_epoch, loss.cb_beta)
        return None

    def start_crt(self) -> None:
        """Freeze the backbone, re-initialize the classifier, give it its own optimizer."""
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        head = self.model.classifier
        head.reset_parameters()
        for parameter in head.parameters():
            parameter.requires_grad_(True)
        self.crt_optimizer = torch.optim.SGD(
            head.parameters(), lr=self.config.train.crt_lr, momentum=self.config.train.momentum,
            weight_decay=self.config.train.weight_decay,
        )  # fmt: skip

    def state_dict(self, epoch: int) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "regularizer": self.regularizer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "reports": self.reports,
            "next_epoch": epoch + 1,
        }
        if self.regularizer.optimizer is not None:
            state["center_optimizer"] = self.regularizer.optimizer.state_dict()
        if self.crt_optimizer is not None:
            state["crt_optimizer"] = self.crt_optimizer.state_dict()
        return state

    def restore(self, checkpoint: ray.train.Checkpoint) -> None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=True, map_location="cpu")
        self.model.load_state_dict(state["model"])
        self.regularizer.load_state_dict(state["regularizer"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "center_optimizer" in state:
            self.regularizer.optimizer.load_state_dict(state["center_optimizer"])
        if "crt_optimizer" in state:
            model_state = self.model.classifier.state_dict()
            self.start_crt()
            self.model.classifier.load_state_dict(model_state)
            self.crt_optimizer.load_state_dict(state["crt_optimizer"])
        self.history = list(state["history"])
        self.reports = [dict(report) for report in state["reports"]]
        self.next_epoch = int(state["next_epoch"])


def supervised_loss(loss: nn.Module, logits: torch.Tensor, labels: torch.Tensor, mix: Mix | None) -> torch.Tensor:
    if mix is None:
        return loss(logits, labels)
    return mix.lam * loss(logits, labels) + (1 - mix.lam) * loss(logits, mix.labels_b(labels))


def sample_classes(labels: torch.Tensor, mix: Mix | None, mixup_labels: str) -> SampleClasses:
    """The classes the regularizers count each sample for: its label; for a mixed sample the larger
    share's label (`dominant`) or both labels weighted by lambda and 1 - lambda (`both`)."""
    if mix is None:
        return SampleClasses.hard(labels)
    if mixup_labels == "both":
        return SampleClasses.mixed(labels, mix.labels_b(labels), mix.lam)
    return SampleClasses.hard(mix.dominant(labels))


def training_step(
    model: nn.Module, state: TrialState, images: torch.Tensor, labels: torch.Tensor, mix: Mix | None,
    phase: str, bf16: bool,
) -> list[torch.Tensor]:  # fmt: skip
    """One optimisation step: the base loss (this worker's mean; DDP averages the gradients), plus
    the regularizer terms of the global batch when `phase` is not `off`; the centres move only `on`.
    Returns [loss, loss_sup, loss_within, loss_between, loss_center], detached."""
    config = state.config
    device = images.device
    if mix is not None:
        images = mix.images(images)
    if device.type == "cuda" and config.model.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(bf16, device):
        logits, features = model(images)
    logits, features = logits.float(), features.float()
    loss_sup = supervised_loss(state.loss, logits, labels, mix)
    loss = loss_sup
    zero = loss_sup.new_zeros(())
    terms = {"loss_within": zero, "loss_between": zero, "loss_center": zero}
    if phase != "off":
        terms = state.regularizer(features, sample_classes(labels, mix, config.regularizer.mixup_labels))
        loss = loss + state.regularizer.weighted(terms)
    state.optimizer.zero_grad(set_to_none=True)
    state.regularizer.zero_grad()
    loss.backward()
    if config.train.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
    state.optimizer.step()
    if phase == "on":
        state.regularizer.step()
    return [v.detach() for v in (loss, loss_sup, terms["loss_within"], terms["loss_between"], terms["loss_center"])]


def train_epoch(
    epoch: int, config: StudyConfig, model: nn.Module, state: TrialState, train: DeviceSplit, data: StudyData,
    rank: int, world_size: int,
) -> dict[str, float]:  # fmt: skip
    """One main-stage pass over this worker's shard; returns the mean loss terms of the global
    batches (the regularizer terms are global already; the base loss is averaged over the workers)."""
    device = train.labels.device
    bf16 = use_bf16(config.train, device)
    phase = regularizer_phase(epoch, config.regularizer)
    lr = learning_rate(epoch, config.train)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    if hasattr(state.loss, "weight"):
        weight = state.class_weights(epoch, data.train_counts)
        state.loss.weight = None if weight is None else weight.to(device)
    model.train()
    names = ("train_loss", "loss_sup", "loss_within", "loss_between", "loss_center")
    totals = torch.zeros(len(names), dtype=torch.float64)
    seen = 0
    order = epoch_order(data.train.labels, config.train.seed, epoch, config.data.sampler)
    batches = train.train_batches(order, config.train.batch_size, rank, world_size, config.train.seed, epoch, data.augment)
    for number, images, labels in batches:
        mix = draw_mix(config.train.mixup_alpha, len(labels), config.train.seed, epoch, number * world_size + rank, device)
        values = training_step(model, state, images, labels, mix, phase, bf16)
        totals += torch.stack([v.float() for v in values]).double().cpu()
        seen += 1
    means = totals / max(seen, 1)
    if world_size > 1:
        dist.all_reduce(means)
        means /= world_size
    return {"lr": lr, **dict(zip(names, means.tolist()))}


def crt_epoch(
    stage_epoch: int, config: StudyConfig, state: TrialState, train: DeviceSplit, data: StudyData,
    rank: int, world_size: int,
) -> dict[str, float]:  # fmt: skip
    """One cRT epoch: class-balanced batches, frozen (eval-mode) backbone, only the classifier learns;
    its gradient is averaged across workers by hand (it is trained outside the DDP wrapper)."""
    device = train.labels.device
    bf16 = use_bf16(config.train, device)
    lr = crt_learning_rate(stage_epoch, config.train)
    for group in state.crt_optimizer.param_groups:
        group["lr"] = lr
    model = state.model
    model.eval()
    head = model.classifier
    total, batches = 0.0, 0
    epoch = config.train.epochs + stage_epoch
    order = epoch_order(data.train.labels, config.train.seed, epoch, "class_balanced")
    for _, images, labels in train.train_batches(order, config.train.batch_size, rank, world_size, config.train.seed, epoch, data.augment):
        with torch.no_grad(), autocast(bf16, device):
            _, features = model(images)
        loss = F.cross_entropy(head(features.float()), labels)
        state.crt_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if world_size > 1:
            for parameter in head.parameters():
                dist.all_reduce(parameter.grad)
                parameter.grad.div_(world_size)
        state.crt_optimizer.step()
        total += float(loss.detach())
        batches += 1
    return {"lr": lr, "train_loss": total / max(batches, 1), "loss_sup": total / max(batches, 1)}


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point: `loop_config["study"]` is the trial's resolved config as a dict;
    `loop_config["source"]`, when present, is an object-store reference to the decoded data set,
    shared by every trial on the node instead of decoded (and held) once per trial."""
    config = StudyConfig.model_validate(loop_config["study"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    bf16 = use_bf16(config.train, device)
    source_ref = loop_config.get("source")
    data = build_data(config.data, ray.get(source_ref[0]) if source_ref else None)
    train, val, test = device_splits(data, config.data, device)

    state = TrialState(config, data, device, WorkerSum(world_size))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        state.restore(checkpoint)
    model = ray.train.torch.prepare_model(state.model, move_to_device=False) if world_size > 1 else state.model

    static = {
        "data_fingerprint": data.fingerprint,
        "num_train": len(data.train),
        "world_size": world_size,
        "worker_nodes": ",".join(worker_nodes(world_size)),
    }
    static.update({f"classes_{name}": len(members) for name, members in data.groups.items()})
    if data.counts_note:  # training counts below the profile's: validation images held out of its share
        static["counts_note"] = data.counts_note
    total_epochs = config.train.total_epochs
    for earlier in state.reports if checkpoint is not None else []:
        # Restored: say every epoch up to the checkpoint again. An interrupted driver may have stopped
        # before it took the last reports (the worker saves each checkpoint first, and after a second
        # Ctrl-C workers outlive the driver by a few epochs); a trial restored after its last epoch
        # has nothing else to say. The driver keeps the latest report of each epoch; MLflow and ASHA
        # (time attribute `epoch`) take an epoch once.
        ray.train.report(earlier)
    if state.next_epoch >= total_epochs:
        return
    for epoch in range(state.next_epoch, total_epochs):
        started = time.perf_counter()
        metrics: dict[str, Any] = {"epoch": epoch + 1, **static}  # completed epochs, 1 to the total
        if epoch < config.train.epochs:
            metrics.update(train_epoch(epoch, config, model, state, train, data, rank, world_size))
        else:
            if state.crt_optimizer is None:
                state.start_crt()
            metrics.update(crt_epoch(epoch - config.train.epochs, config, state, train, data, rank, world_size))
        metrics.update(prefixed(evaluate_split(state.model, val, data, bf16, rank, world_size).metrics, "val_"))
        last = epoch == total_epochs - 1
        every = config.metrics.every
        measurement = None
        if last or (every and (epoch + 1) % every == 0):
            measurement = measure_collapse(state, train, test, data, bf16, rank, world_size, epoch)
            metrics.update(measurement.metrics)
        metrics["epoch_time_s"] = time.perf_counter() - started
        if not all(math.isfinite(v) for k, v in metrics.items() if k.endswith("loss") and isinstance(v, float)):
            raise FloatingPointError(f"non-finite loss at epoch {epoch}: {metrics}")
        report(metrics, state, epoch, rank, measurement if last else None, data)


@dataclass
class Measurement:
    """Test accuracy and the NC metrics of one epoch, with what the end-of-trial figures need."""

    metrics: dict[str, float]
    norms: np.ndarray
    angles_deg: np.ndarray
    test_per_class: np.ndarray


def is_collapse_key(key: str) -> bool:
    return key.startswith(("nc", "min_angle"))


def measure_collapse(state: TrialState, train, test, data: StudyData, bf16: bool, rank: int, world_size: int, epoch: int) -> Measurement:
    """NC metrics of the training features (unprefixed, as in trials.parquet) and of the test
    features (test_*), test accuracy by group (acc_*), calibration; recorded in the NC history."""
    on_train = evaluate_split(state.model, train, data, bf16, rank, world_size, collapse=True)
    on_test = evaluate_split(state.model, test, data, bf16, rank, world_size, collapse=True)
    metrics = {k: v for k, v in on_train.metrics.items() if is_collapse_key(k)}
    metrics.update({f"train_{k}": v for k, v in on_train.metrics.items() if not is_collapse_key(k)})
    metrics.update({k if k.startswith("acc_") else f"test_{k}": v for k, v in on_test.metrics.items()})
    state.history.append({"epoch": epoch + 1, **{k: v for k, v in metrics.items() if is_collapse_key(k)}})
    return Measurement(metrics, on_train.collapse.mean_norms, on_train.collapse.angles_deg, on_test.per_class_accuracy)


def worker_nodes(world_size: int) -> list[str]:
    """The Ray node id of every rank (gathered once per trial), so a study records where it ran."""
    node = ray.get_runtime_context().get_node_id()
    if world_size == 1:
        return [node]
    nodes: list[str | None] = [None] * world_size
    dist.all_gather_object(nodes, node)
    return [str(n) for n in nodes]


def report(
    metrics: dict[str, Any], state: TrialState, epoch: int, rank: int, final: Measurement | None, data: StudyData
) -> None:
    """Report the epoch; rank 0 attaches a checkpoint (model, centres, optimizers, NC history, next
    epoch) and, at the end, the trial's figures and per-class arrays."""
    state.reports.append(metrics)
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state.state_dict(epoch), Path(folder) / CHECKPOINT_FILE)
        if final is not None:
            write_trial_figures(Path(folder), final, state.history, data)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def write_trial_figures(folder: Path, final: Measurement, history: list[dict[str, float]], data: StudyData) -> None:
    """figures/*.png and collapse.npz (per-class test accuracy, centred-mean norms and angles of the
    training features, training counts) for MLflow and for `ncstudy report`."""
    figures = folder / FIGURES
    angle_heatmap(final.angles_deg, figures / "angles.png")
    norm_bars(final.norms, data.groups, figures / "norms.png")
    nc_curves(history, figures / "nc_curves.png")
    np.savez(
        folder / COLLAPSE_FILE,
        test_per_class_accuracy=final.test_per_class,
        mean_norms=final.norms,
        angles_deg=final.angles_deg,
        train_counts=np.asarray(data.train_counts),
    )
