"""One epoch of a trial on one worker: the main stage's optimisation step and pass (Liu et al.,
AISTATS 2023, Eq. 6: the base loss plus lambda_W * L_W + lambda_B * L_B on the pooled features, from
`regularizer.start_epoch`) and the cRT stage's pass (Kang et al., ICLR 2020: frozen backbone, the
classifier re-trained on class-balanced batches). Loss terms accumulate on the device; the host
reads them once per epoch. With several DDP workers each step is the global batch's (docs/design.md,
"Worker-count invariance").
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ncstudy.config import StudyConfig
from ncstudy.data.build import StudyData
from ncstudy.data.loader import DeviceSplit, epoch_order
from ncstudy.engine.recipe import Mix, autocast, crt_learning_rate, draw_mix, learning_rate, use_bf16
from ncstudy.engine.state import TrialState, regularizer_phase
from ncstudy.method.regularizers import SampleClasses, WorkerSum


def supervised_loss(
    loss: nn.Module, logits: torch.Tensor, labels: torch.Tensor, mix: Mix | None, workers: WorkerSum
) -> torch.Tensor:  # fmt: skip
    """The base loss of the global batch (for mixup, lambda and 1 - lambda of the two labels' losses).

    One worker: the loss's own mean. W DDP workers: this worker's share W * sum_own v_i / sum_all c_i
    of the loss's `terms` (ncstudy.method.losses). DDP averages the W gradients, so the step is that
    of sum_all v_i / sum_all c_i, the whole batch's mean on one worker, and the workers' values
    average to it. A worker's own mean would weigh its samples by its own shard's total weight: DRW's
    class weights and unequal last shards would make the result depend on W."""
    targets = [(1.0, labels)] if mix is None else [(mix.lam, labels), (1 - mix.lam, mix.labels_b(labels))]
    if workers.world_size == 1:
        return sum(share * loss(logits, target) for share, target in targets)
    shares = [share for share, _ in targets]
    terms = [loss.terms(logits, target) for _, target in targets]
    totals = workers.sum_(torch.stack([counts.sum() for _, counts in terms]).detach())
    return sum(share * values.sum() * workers.world_size / total for share, (values, _), total in zip(shares, terms, totals))


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
    """One optimisation step: the global batch's base loss (`supervised_loss`), plus
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
    loss_sup = supervised_loss(state.loss, logits, labels, mix, state.workers)
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
    names = ("loss", "loss_sup", "loss_within", "loss_between", "loss_center")
    totals = torch.zeros(len(names), dtype=torch.float64, device=device)  # on the device: no host sync per batch
    seen = 0
    order = epoch_order(data.train.labels, config.train.seed, epoch, config.data.sampler)
    batches = train.train_batches(order, config.train.batch_size, rank, world_size, config.train.seed, epoch, data.augment)
    for number, images, labels in batches:
        mix = draw_mix(config.train.mixup_alpha, len(labels), config.train.seed, epoch, number * world_size + rank, device)
        values = training_step(model, state, images, labels, mix, phase, bf16)
        totals += torch.stack(values).double()
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
    total, batches = torch.zeros((), dtype=torch.float64, device=device), 0
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
        total += loss.detach().double()
        batches += 1
    mean = float(total) / max(batches, 1)
    return {"lr": lr, "loss": mean, "loss_sup": mean}
