"""One trial's training state: the model, the regularizer with its centres, the base loss, the
optimizers, the NC history and the reports so far, built from a StudyConfig; saved and restored as
one state dict, so every runner (Ray Train worker, Tune trial, `ncstudy train`) resumes the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ncstudy.config import RegularizerConfig, StudyConfig
from ncstudy.data.build import StudyData
from ncstudy.method.losses import build_loss, class_balanced_weights, drw_weights
from ncstudy.method.regularizers import ONE_WORKER, NeuralCollapseRegularizer, WorkerSum
from ncstudy.models import build_model
from ncstudy.models.global_batchnorm import convert_to_global_batchnorm


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
        self.workers = workers  # the trial's DDP workers: the base loss and regularizers sum over them
        self.model = build_model(config.model, data.in_channels, data.num_classes).to(device)
        if device.type == "cuda" and config.model.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if workers.world_size > 1 and config.model.sync_batchnorm:  # the global batch's statistics
            if device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)  # same state-dict keys
            else:  # SyncBatchNorm runs only on accelerators
                self.model = convert_to_global_batchnorm(self.model, workers.group)
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

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict(epoch)`'s result (ncstudy.engine.checkpoint.read_checkpoint)."""
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
