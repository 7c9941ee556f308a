"""The neural-collapse measurement of an epoch: NC metrics of the training features (Papyan, Han &
Donoho, PNAS 2020; per frequency group as in Liu et al., AISTATS 2023), test accuracy by group and
calibration, and the arrays the trial's figures are drawn from (ncstudy.outputs.figures.trial_figures)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ncstudy.data.build import StudyData
from ncstudy.data.loader import DeviceSplit
from ncstudy.engine.evaluation import evaluate_split, prefixed
from ncstudy.engine.state import TrialState


@dataclass
class Measurement:
    """Test accuracy and the NC metrics of one epoch, with the per-class arrays behind them."""

    metrics: dict[str, float]
    norms: np.ndarray
    angles_deg: np.ndarray
    test_per_class: np.ndarray


def is_collapse_key(key: str) -> bool:
    return key.startswith(("nc", "min_angle"))


def measure_collapse(
    state: TrialState, train: DeviceSplit, test: DeviceSplit, data: StudyData, bf16: bool, rank: int, world_size: int,
    epoch: int,
) -> Measurement:  # fmt: skip
    """Every metric of the training split (train_*: accuracy, loss and calibration in eval mode, the
    NC metrics of its features) and of the test split (test_*); the training features' NC metrics
    also go to the NC history (unprefixed there: it holds nothing else)."""
    on_train = evaluate_split(state.model, train, data, bf16, rank, world_size, collapse=True)
    on_test = evaluate_split(state.model, test, data, bf16, rank, world_size, collapse=True)
    metrics = {**prefixed(on_train.metrics, "train_"), **prefixed(on_test.metrics, "test_")}
    state.history.append({"epoch": epoch + 1, **{k: v for k, v in on_train.metrics.items() if is_collapse_key(k)}})
    return Measurement(metrics, on_train.collapse.mean_norms, on_train.collapse.angles_deg, on_test.per_class_accuracy)
