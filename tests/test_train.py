"""The per-worker loop's pieces, run directly (no Ray): schedule, regularizer gating, learning."""

import numpy as np
import pytest
import torch

from ncstudy.config import StudyConfig
from ncstudy.data.build import build_data
from ncstudy.data.loader import TensorImages, channel_stats, epoch_order, shard_batches
from ncstudy.engine.recipe import learning_rate
from ncstudy.engine.state import TrialState
from ncstudy.engine.step import crt_epoch, train_epoch


def small_study(**regularizer) -> StudyConfig:
    return StudyConfig.model_validate(
        {
            "name": "unit",
            "data": {"imbalance": {"ratio": 10}},
            "model": {"width": 8},
            "regularizer": {"lambda_within": 0.01, "lambda_between": 0.1, **regularizer},
            "train": {"epochs": 4, "batch_size": 64, "lr": 0.05, "warmup_epochs": 1, "milestones": [3]},
        }
    )


def setup(study):
    data = build_data(study.data)
    return data, TensorImages(data.train, torch.device("cpu"), *channel_stats(data.train))


def test_learning_rate_warms_up_then_steps():
    config = small_study().train
    assert [learning_rate(e, config) for e in range(4)] == [0.05, 0.05, 0.05, 0.05 * 0.1]
    config = config.model_copy(update={"warmup_epochs": 4})
    assert learning_rate(0, config) == 0.05 / 4


def test_no_regularizer_before_start_epoch_then_centres_move():
    study = small_study(start_epoch=1)
    data, train = setup(study)
    state = TrialState(study, data, torch.device("cpu"))
    before = state.regularizer.learnable.centers.detach().clone()
    first = train_epoch(0, study, state.model, state, train, data, 0, 1)
    assert first["loss_within"] == 0.0 and first["loss_between"] == 0.0
    assert torch.equal(state.regularizer.learnable.centers, before)
    second = train_epoch(1, study, state.model, state, train, data, 0, 1)
    assert second["loss_within"] > 0.0 and second["loss_between"] < 0.0
    assert not torch.equal(state.regularizer.learnable.centers, before)


def test_training_reduces_the_supervised_loss_and_is_seeded():
    study = small_study()
    data, train = setup(study)
    runs = []
    for _ in range(2):
        state = TrialState(study, data, torch.device("cpu"))
        runs.append([train_epoch(e, study, state.model, state, train, data, 0, 1)["loss_sup"] for e in range(4)])
    assert runs[0][-1] < 0.7 * runs[0][0]
    assert runs[0] == runs[1]


def test_epoch_shards_are_disjoint_and_equal_sized():
    order = epoch_order(np.zeros(103, dtype=np.int64), seed=0, epoch=2)
    shards = [torch.cat([b for _, b in shard_batches(order, 16, rank=r, world_size=2)]) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 51
    assert not set(shards[0].tolist()) & set(shards[1].tolist())


def test_class_balanced_order_draws_classes_uniformly():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    order = epoch_order(labels, seed=0, epoch=0, sampler="class_balanced")
    drawn = np.bincount(labels[order.numpy()], minlength=3) / len(order)
    assert np.allclose(drawn, 1 / 3, atol=0.05)
    assert torch.equal(order, epoch_order(labels, seed=0, epoch=0, sampler="class_balanced"))


def test_cosine_schedule_ends_near_zero():
    config = small_study().train.model_copy(update={"schedule": "cosine", "warmup_epochs": 0, "epochs": 10})
    rates = [learning_rate(e, config) for e in range(10)]
    assert rates[0] == 0.05 and all(a > b for a, b in zip(rates, rates[1:])) and rates[-1] < 0.01


def test_drw_switches_class_weights_on_at_its_epoch():
    study = small_study().model_copy(update={"loss": small_study().loss.model_copy(update={"reweight": "drw", "drw_epoch": 1})})
    data, train = setup(study)
    state = TrialState(study, data, torch.device("cpu"))
    train_epoch(0, study, state.model, state, train, data, 0, 1)
    assert state.loss.weight is None
    train_epoch(1, study, state.model, state, train, data, 0, 1)
    weights = state.loss.weight
    assert weights is not None and weights[-1] > weights[0] and abs(float(weights.sum()) - 10) < 1e-4


def test_crt_trains_only_the_classifier():
    study = small_study()
    data, train = setup(study)
    state = TrialState(study, data, torch.device("cpu"))
    train_epoch(0, study, state.model, state, train, data, 0, 1)
    body = [p.detach().clone() for name, p in state.model.named_parameters() if not name.startswith("classifier")]
    state.start_crt()
    head_before = state.model.classifier.weight.detach().clone()
    crt_epoch(0, study, state, train, data, 0, 1)
    body_after = [p for name, p in state.model.named_parameters() if not name.startswith("classifier")]
    assert all(torch.equal(a, b) for a, b in zip(body, body_after))
    assert not torch.equal(state.model.classifier.weight, head_before)


@pytest.mark.parametrize("mode", ["ema", "batch"])
def test_ema_and_batch_centres_regularize_features(mode):
    study = small_study(centers=mode)
    data, train = setup(study)
    state = TrialState(study, data, torch.device("cpu"))
    assert state.regularizer.learnable is None
    result = train_epoch(0, study, state.model, state, train, data, 0, 1)
    assert result["loss_within"] > 0 and result["loss_between"] < 0
    if mode == "ema":
        assert bool(state.regularizer.seen.all()) and float(state.regularizer.ema.abs().sum()) > 0


def test_mixup_and_centre_loss_run_and_are_seeded():
    study = small_study(lambda_center=0.01)
    study = study.model_copy(update={"train": study.train.model_copy(update={"mixup_alpha": 0.2})})
    data, train = setup(study)
    results = []
    for _ in range(2):
        state = TrialState(study, data, torch.device("cpu"))
        results.append(train_epoch(0, study, state.model, state, train, data, 0, 1))
    assert results[0]["loss_center"] > 0 and results[0] == results[1]
