import math

import pytest
import torch

from ncstudy.method.regularizers import ClassCenters, between_class_loss, within_class_loss


def test_within_class_loss_by_hand():
    features = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1])
    centers = torch.tensor([[1.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    # class 0: mean(0, 4) = 2; class 1: 4; class 2 absent; (2 + 4) / K with K = 3
    assert within_class_loss(features, labels, centers).item() == pytest.approx(2.0)


def test_within_class_loss_weights_classes_not_samples():
    centers = torch.zeros(2, 1)
    many = within_class_loss(torch.ones(10, 1), torch.zeros(10, dtype=torch.long), centers)
    one = within_class_loss(torch.ones(1, 1), torch.zeros(1, dtype=torch.long), centers)
    assert many.item() == pytest.approx(one.item()) == pytest.approx(0.5)


CENTERS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])  # mean 0; angles 90, 135, 135 degrees


def test_between_class_loss_hard_min_by_hand():
    expected = -(math.pi / 2 + math.pi / 2 + 3 * math.pi / 4) / 3
    assert between_class_loss(CENTERS).item() == pytest.approx(expected, abs=1e-6)
    # centring: a common offset does not change the angles between centred centres
    assert between_class_loss(CENTERS + 10.0).item() == pytest.approx(expected, abs=1e-5)


def test_between_class_loss_soft_min_by_hand():
    t = 0.5

    def soft_min(a, b):
        return -t * math.log(math.exp(-a / t) + math.exp(-b / t))

    q, h = math.pi / 2, 3 * math.pi / 4
    expected = -(soft_min(q, h) + soft_min(q, h) + soft_min(h, h)) / 3
    assert between_class_loss(CENTERS, temperature=t).item() == pytest.approx(expected, abs=1e-6)
    hard = between_class_loss(CENTERS).item()
    assert between_class_loss(CENTERS, temperature=1e-3).item() == pytest.approx(hard, abs=1e-2)


def test_simplex_etf_reaches_the_largest_minimum_angle():
    k = 5
    etf = torch.eye(k) - 1.0 / k
    assert between_class_loss(etf).item() == pytest.approx(-math.acos(-1 / (k - 1)), abs=1e-5)
    random = torch.randn(k, k, generator=torch.Generator().manual_seed(0))
    assert between_class_loss(random).item() > between_class_loss(etf).item()


def test_clamp_keeps_gradients_finite_for_coincident_centres():
    centers = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, -3.0]], requires_grad=True)
    between_class_loss(centers).backward()
    assert torch.isfinite(centers.grad).all()


def test_temperature_must_be_positive():
    with pytest.raises(ValueError):
        between_class_loss(CENTERS, temperature=0.0)


def test_centre_gradient_is_scaled_by_one_over_lambda_within():
    centers = ClassCenters(2, 3, torch.Generator().manual_seed(0))
    features = torch.randn(4, 3)
    labels = torch.tensor([0, 0, 1, 1])
    (0.01 * within_class_loss(features, labels, centers.centers)).backward()
    scaled_from = centers.centers.grad.clone()
    centers.scale_gradient(0.01)
    assert torch.allclose(centers.centers.grad, scaled_from / 0.01)
    optimizer = centers.make_optimizer()
    assert optimizer.defaults["lr"] == 0.5 and optimizer.defaults["momentum"] == 0.0


def test_the_trial_regularizer_on_one_worker_is_the_public_definition():
    """NeuralCollapseRegularizer (global-batch sums, weighted labels) reduces to within_class_loss,
    between_class_loss and center_loss on one worker with hard labels."""
    from ncstudy.config import RegularizerConfig
    from ncstudy.method.regularizers import NeuralCollapseRegularizer, center_loss

    config = RegularizerConfig(lambda_within=0.1, lambda_between=0.2, lambda_center=0.3, temperature=0.5)
    regularizer = NeuralCollapseRegularizer(config, 5, 3, torch.Generator().manual_seed(0))
    features, labels = torch.randn(9, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 0, 1, 1, 1, 2, 4, 4, 0])
    terms = regularizer(features, labels)
    centers = regularizer.learnable.centers
    assert terms["loss_within"].item() == pytest.approx(within_class_loss(features, labels, centers).item())
    assert terms["loss_between"].item() == pytest.approx(between_class_loss(centers, 0.5).item())
    assert terms["loss_center"].item() == pytest.approx(center_loss(features, labels, centers).item())


@pytest.mark.parametrize("momentum", [0.5, 0.9, 0.99])
def test_ema_centres_pass_l_b_to_the_features_at_full_weight(momentum):
    """EMA centres take the running mean's value and the batch means' gradient: with the running mean
    at the batch means (so every momentum gives the same centres), the features' gradient of L_B is
    that of batch centres, whatever the momentum. Through the blend alone it was (1 - momentum) of it,
    and the ablation's "+ L_B" row at lambda_B 0.1 moved the features ten times less than its name says."""
    from ncstudy.config import RegularizerConfig
    from ncstudy.method.regularizers import NeuralCollapseRegularizer

    features = torch.randn(12, 4, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 0, 1])
    gradients = {}
    for centers, m in (("batch", 0.0), ("ema", momentum)):
        regularizer = NeuralCollapseRegularizer(
            RegularizerConfig(lambda_within=0.0, lambda_between=0.1, centers=centers, ema_momentum=m), 4, 4, torch.Generator()
        )
        with torch.no_grad():
            regularizer.ema.copy_(torch.stack([features[labels == k].mean(0) for k in range(4)]))
            regularizer.seen.fill_(True)
        h = features.clone().requires_grad_(True)
        regularizer.weighted(regularizer(h, labels)).backward()
        gradients[centers] = h.grad
    assert gradients["batch"].abs().sum() > 0
    torch.testing.assert_close(gradients["ema"], gradients["batch"], rtol=1e-5, atol=1e-7)
