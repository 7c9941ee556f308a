"""A trial's checkpoint folder, the same for every runner: `checkpoint.pt` (TrialState.state_dict:
model, centres, optimizers, NC history, reports, next epoch) and, at the last epoch, `collapse.npz`
(per-class test accuracy, centred-mean norms and angles of the training features, training counts,
frequency group of each class, the NC history as JSON), from which the report side draws the trial's
figures (ncstudy.outputs.figures.trial_figures): the engine draws nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ncstudy.atomic import replaced_atomically
from ncstudy.data.build import StudyData
from ncstudy.data.groups import GROUPS
from ncstudy.engine.checkpoint_files import CHECKPOINT_FILE, COLLAPSE_FILE
from ncstudy.engine.measure import Measurement
from ncstudy.engine.state import TrialState


def write_checkpoint(folder: Path, state: TrialState, epoch: int, final: Measurement | None, data: StudyData) -> None:
    """The state after loop index `epoch`; with `final`, the arrays of the trial's last measurement.
    Each file is written whole or not at all (ncstudy.atomic), so a folder reused from epoch to
    epoch (`ncstudy train`) always holds a readable checkpoint."""
    with replaced_atomically(folder / CHECKPOINT_FILE) as temporary:
        torch.save(state.state_dict(epoch), temporary)
    if final is not None:
        group_of = np.full(data.num_classes, -1)
        for number, name in enumerate(GROUPS):
            group_of[data.groups[name]] = number
        with replaced_atomically(folder / COLLAPSE_FILE) as temporary, open(temporary, "wb") as file:
            np.savez(
                file,
                test_per_class_accuracy=final.test_per_class,
                mean_norms=final.norms,
                angles_deg=final.angles_deg,
                train_counts=np.asarray(data.train_counts),
                class_names=np.asarray(data.train.classes),
                group_of=group_of,
                nc_history=np.asarray(json.dumps(state.history)),
            )


def read_checkpoint(folder: Path) -> dict[str, Any]:
    """The state dict `TrialState.restore` takes."""
    return torch.load(folder / CHECKPOINT_FILE, weights_only=True, map_location="cpu")
