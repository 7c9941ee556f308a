"""The per-worker training loop that Ray Train runs for one trial.

One epoch: a seeded permutation of the long-tailed training set (sharded across DDP workers), the
base loss, and from `regularizer.start_epoch` on lambda_W * L_W + lambda_B * L_B on the pooled
features (Liu et al., AISTATS 2023, Eq. 6). The learnable class centres have their own SGD whose
gradient is averaged across workers by hand (they live outside the DDP module) and scaled by
1 / lambda_W, as in the authors' released code. Every epoch reports validation accuracy by
frequency group and saves a checkpoint; the last epoch adds test accuracy by group and the
neural-collapse metrics of the training features. Metrics leave only through `ray.train.report`:
tracking is the driver's business (see ncstudy.tracking.MlflowReportCallback).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ncstudy.config import RegularizerConfig, StudyConfig, TrainConfig
from ncstudy.data.build import StudyData, build_data
from ncstudy.data.loader import Normalizer, epoch_batches, eval_batches, to_tensors
from ncstudy.metrics import group_accuracy, neural_collapse, shot_groups
from ncstudy.models import build_model
from ncstudy.regularizers import ClassCenters, between_class_loss, within_class_loss

CHECKPOINT_FILE = "checkpoint.pt"
EVAL_BATCH = 1024


def learning_rate(epoch: int, config: TrainConfig) -> float:
    """Linear warm-up over `warmup_epochs`, then x`gamma` at each milestone (the LDAM-DRW schedule)."""
    if epoch < config.warmup_epochs:
        return config.lr * (epoch + 1) / config.warmup_epochs
    return config.lr * config.gamma ** sum(epoch >= m for m in config.milestones)


def regularizer_active(epoch: int, config: RegularizerConfig) -> bool:
    """No regularizer at all before start_epoch (GUIDE.md: the released code's frozen pull is a bug)."""
    return epoch >= config.start_epoch and (config.lambda_within > 0 or config.lambda_between > 0)


class Evaluation:
    """Predictions and features of one split, in eval mode, without augmentation."""

    def __init__(self, model: nn.Module, images: torch.Tensor, normalize: Normalizer):
        logits, features = [], []
        model.eval()
        with torch.no_grad():
            for part in eval_batches(len(images), EVAL_BATCH):
                out, feat = model(normalize(images[part]))
                logits.append(out)
                features.append(feat)
        self.logits = torch.cat(logits)
        self.features = torch.cat(features)


def evaluate(model: nn.Module, images, labels, normalize, groups, num_classes, split: str) -> dict[str, float]:
    """Accuracy overall and by group, and the CE loss: val_acc_*, val_loss for "val";
    acc_*, test_loss for "test" (GUIDE.md names the test accuracies acc_all ... acc_few)."""
    evaluation = Evaluation(model, images, normalize)
    accuracy = group_accuracy(
        evaluation.logits.argmax(dim=1).cpu().numpy(), labels.cpu().numpy(), groups, num_classes
    )
    prefix = "" if split == "test" else f"{split}_"
    metrics = {f"{prefix}acc_{name}": value for name, value in accuracy.items()}
    metrics[f"{split}_loss"] = float(F.cross_entropy(evaluation.logits, labels))
    return metrics


def collapse_metrics(model: nn.Module, images, labels, normalize, num_classes: int) -> dict[str, float]:
    """NC1-NC4 of the (unaugmented) training features against the linear classifier."""
    evaluation = Evaluation(model, images, normalize)
    head = model.classifier
    return neural_collapse(evaluation.features, labels, num_classes, head.weight, head.bias)


class TrialState:
    """Model, centres and optimizers of one worker, with checkpoint save and restore."""

    def __init__(self, config: StudyConfig, data: StudyData, device: torch.device):
        torch.manual_seed(config.train.seed)
        self.model = build_model(config.model, data.train.images.shape[1], data.num_classes).to(device)
        generator = torch.Generator().manual_seed(config.train.seed + 1)
        self.centers = ClassCenters(data.num_classes, config.model.feature_dim, generator).to(device)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=config.train.lr,
            momentum=config.train.momentum,
            weight_decay=config.train.weight_decay,
        )
        self.center_optimizer = self.centers.make_optimizer(config.regularizer.center_lr)
        self.next_epoch = 0

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "centers": self.centers.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "center_optimizer": self.center_optimizer.state_dict(),
            "next_epoch": epoch + 1,
        }

    def restore(self, checkpoint: ray.train.Checkpoint) -> None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=True, map_location="cpu")
        self.model.load_state_dict(state["model"])
        self.centers.load_state_dict(state["centers"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.center_optimizer.load_state_dict(state["center_optimizer"])
        self.next_epoch = int(state["next_epoch"])


def train_epoch(
    epoch: int,
    config: StudyConfig,
    model: nn.Module,
    state: TrialState,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    normalize: Normalizer,
    rank: int,
    world_size: int,
) -> dict[str, float]:
    """One pass over this worker's shard; returns the mean loss terms (this worker's)."""
    reg = config.regularizer
    use_regularizer = regularizer_active(epoch, reg)
    lr = learning_rate(epoch, config.train)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    model.train()
    totals = torch.zeros(4, dtype=torch.float64)
    batches = 0
    for index in epoch_batches(len(train_y), config.train.batch_size, config.train.seed, epoch, rank, world_size):
        images, labels = normalize(train_x[index]), train_y[index]
        logits, features = model(images)
        loss_sup = F.cross_entropy(logits, labels)
        loss = loss_sup
        loss_within = loss_between = torch.zeros((), device=logits.device)
        if use_regularizer:
            centers = state.centers.centers
            loss_within = within_class_loss(features, labels, centers)
            loss_between = between_class_loss(centers, reg.temperature)
            loss = loss + reg.lambda_within * loss_within + reg.lambda_between * loss_between
        state.optimizer.zero_grad(set_to_none=True)
        state.center_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        if use_regularizer:
            grad = state.centers.centers.grad
            if world_size > 1 and grad is not None:
                dist.all_reduce(grad)
                grad.div_(world_size)
            state.centers.scale_gradient(reg.lambda_within)
            state.center_optimizer.step()
        totals += torch.stack([loss.detach(), loss_sup.detach(), loss_within.detach(), loss_between.detach()]).double().cpu()
        batches += 1
    mean = (totals / max(batches, 1)).tolist()
    return {"lr": lr, "train_loss": mean[0], "loss_sup": mean[1], "loss_within": mean[2], "loss_between": mean[3]}


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point: `loop_config["study"]` is the trial's resolved config as a dict."""
    config = StudyConfig.model_validate(loop_config["study"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    data = build_data(config.data)
    groups = shot_groups(data.train_counts, config.metrics.many_gt, config.metrics.few_lt)
    train_x, train_y = to_tensors(data.train, device)
    val_x, val_y = to_tensors(data.val, device)
    normalize = Normalizer(train_x)

    state = TrialState(config, data, device)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        state.restore(checkpoint)
    model = ray.train.torch.prepare_model(state.model) if world_size > 1 else state.model

    static = {"data_fingerprint": data.fingerprint, "num_train": len(data.train), "world_size": world_size}
    static.update({f"classes_{name}": len(members) for name, members in groups.items()})
    for epoch in range(state.next_epoch, config.train.epochs):
        started = time.perf_counter()
        metrics: dict[str, Any] = {"epoch": epoch, **static}
        metrics.update(train_epoch(epoch, config, model, state, train_x, train_y, normalize, rank, world_size))
        metrics.update(evaluate(state.model, val_x, val_y, normalize, groups, data.num_classes, "val"))
        if epoch == config.train.epochs - 1:
            test_x, test_y = to_tensors(data.test, device)
            metrics.update(evaluate(state.model, test_x, test_y, normalize, groups, data.num_classes, "test"))
            metrics.update(collapse_metrics(state.model, train_x, train_y, normalize, data.num_classes))
        metrics["epoch_time_s"] = time.perf_counter() - started
        if not all(math.isfinite(v) for k, v in metrics.items() if k.endswith("loss") and isinstance(v, float)):
            raise FloatingPointError(f"non-finite loss at epoch {epoch}: {metrics}")
        report(metrics, state, epoch, rank)


def report(metrics: dict[str, Any], state: TrialState, epoch: int, rank: int) -> None:
    """Report the epoch; rank 0 attaches a checkpoint (model, centres, optimizers, next epoch)."""
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state.state_dict(epoch), Path(folder) / CHECKPOINT_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

