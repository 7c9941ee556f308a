"""The training step's readings of the released code: before `start_epoch` nothing acts, or (on
request) the released code's pull towards the frozen initial centres; mixed samples count for the
dominant label or for both labels weighted by lambda."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ncstudy.config import RegularizerConfig, StudyConfig
from ncstudy.engine.recipe import Mix
from ncstudy.engine.state import regularizer_phase
from ncstudy.engine.step import sample_classes, training_step
from ncstudy.method.regularizers import ONE_WORKER, NeuralCollapseRegularizer, SampleClasses


@pytest.mark.parametrize(
    ("settings", "epoch", "phase"),
    [
        ({"start_epoch": 5}, 4, "off"),
        ({"start_epoch": 5}, 5, "on"),
        ({"start_epoch": 5, "before_start": "frozen_centres"}, 0, "frozen"),
        ({"start_epoch": 0, "lambda_within": 0, "lambda_between": 0}, 3, "off"),
    ],
)
def test_regularizer_phase(settings, epoch, phase):
    assert regularizer_phase(epoch, RegularizerConfig(**settings)) == phase


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 4)
        self.classifier = nn.Linear(4, 3)

    def forward(self, images):
        features = self.body(images)
        return self.classifier(features), features


def _step(phase: str) -> tuple[torch.Tensor, torch.Tensor]:
    config = StudyConfig(name="x", regularizer={"lambda_within": 1.0, "lambda_between": 0.1, "start_epoch": 3,
                                                "before_start": "frozen_centres"})  # fmt: skip
    torch.manual_seed(0)
    model = Net()
    regularizer = NeuralCollapseRegularizer(config.regularizer, 3, 4, torch.Generator().manual_seed(1))
    state = SimpleNamespace(config=config, workers=ONE_WORKER, loss=nn.CrossEntropyLoss(), regularizer=regularizer,
                            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))  # fmt: skip
    before = regularizer.learnable.centers.detach().clone()
    images, labels = torch.randn(8, 6, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    training_step(model, state, images, labels, None, phase, False)
    moved = (regularizer.learnable.centers.detach() - before).abs().sum()
    return model.body.weight.detach().clone(), moved


def test_frozen_phase_pulls_the_features_but_not_the_centres():
    off, off_moved = _step("off")
    frozen, frozen_moved = _step("frozen")
    on, on_moved = _step("on")
    assert off_moved == 0 and frozen_moved == 0 and on_moved > 0
    assert not torch.allclose(off, frozen)  # L_W towards the initial centres moved the network
    assert torch.allclose(frozen, on)  # the same network step; only the centres differ


def test_mixed_samples_count_for_the_dominant_or_both_labels():
    labels = torch.tensor([0, 1, 2])
    mix = Mix(0.7, torch.tensor([2, 0, 1]))
    dominant = sample_classes(labels, mix, "dominant")
    assert dominant.labels.tolist() == [0, 1, 2] and dominant.weights.tolist() == [1, 1, 1]
    both = sample_classes(labels, mix, "both")
    assert both.rows.tolist() == [0, 1, 2, 0, 1, 2] and both.labels.tolist() == [0, 1, 2, 2, 0, 1]
    assert both.weights.tolist() == pytest.approx([0.7] * 3 + [0.3] * 3)


def test_weighted_labels_give_weighted_class_means_in_l_w():
    """Both labels weighted: class k's mean distance is sum_i w_ik d_ik / sum_i w_ik."""
    regularizer = NeuralCollapseRegularizer(RegularizerConfig(centers="batch", lambda_between=0), 2, 1, torch.Generator())
    features = torch.tensor([[1.0], [3.0]])
    targets = SampleClasses(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1, 1, 0]), torch.tensor([0.75, 0.75, 0.25, 0.25]))
    within = regularizer(features, targets)["loss_within"]
    means = [(0.75 * 1 + 0.25 * 3) / 1.0, (0.75 * 3 + 0.25 * 1) / 1.0]
    expected = sum(0.75 * (own - m) ** 2 + 0.25 * (other - m) ** 2 for own, other, m in ((1, 3, means[0]), (3, 1, means[1]))) / 2
    assert within.item() == pytest.approx(expected)
