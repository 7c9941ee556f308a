"""The per-worker loop's pieces, run directly (no Ray): schedule, regularizer gating, learning."""

import torch

from ncstudy.config import StudyConfig
from ncstudy.data.build import build_data
from ncstudy.data.loader import Normalizer, epoch_batches, to_tensors
from ncstudy.train import TrialState, learning_rate, train_epoch


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
    x, y = to_tensors(data.train, torch.device("cpu"))
    return data, x, y, Normalizer(x)


def test_learning_rate_warms_up_then_steps():
    config = small_study().train
    assert [learning_rate(e, config) for e in range(4)] == [0.05, 0.05, 0.05, 0.05 * 0.1]
    config = config.model_copy(update={"warmup_epochs": 4})
    assert learning_rate(0, config) == 0.05 / 4


def test_no_regularizer_before_start_epoch_then_centres_move():
    study = small_study(start_epoch=1)
    data, x, y, normalize = setup(study)
    state = TrialState(study, data, torch.device("cpu"))
    before = state.centers.centers.detach().clone()
    first = train_epoch(0, study, state.model, state, x, y, normalize, 0, 1)
    assert first["loss_within"] == 0.0 and first["loss_between"] == 0.0
    assert torch.equal(state.centers.centers, before)
    second = train_epoch(1, study, state.model, state, x, y, normalize, 0, 1)
    assert second["loss_within"] > 0.0 and second["loss_between"] < 0.0
    assert not torch.equal(state.centers.centers, before)


def test_training_reduces_the_supervised_loss_and_is_seeded():
    study = small_study()
    data, x, y, normalize = setup(study)
    runs = []
    for _ in range(2):
        state = TrialState(study, data, torch.device("cpu"))
        runs.append([train_epoch(e, study, state.model, state, x, y, normalize, 0, 1)["loss_sup"] for e in range(4)])
    assert runs[0][-1] < 0.7 * runs[0][0]
    assert runs[0] == runs[1]


def test_epoch_shards_are_disjoint_and_equal_sized():
    shards = [torch.cat(list(epoch_batches(103, 16, seed=0, epoch=2, rank=r, world_size=2))) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 51
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
