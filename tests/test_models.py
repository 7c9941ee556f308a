import pytest
import torch

from ncstudy.models.heads import CosineHead, ETFHead, LinearHead, build_head, simplex_etf
from ncstudy.models.resnet_cifar import ResNetCifar, resnet20, resnet32, resnet56
from ncstudy.models.torchvision_backbones import TorchvisionBackbone

HEADS = ("linear", "cosine", "etf")


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("factory", [resnet20, resnet32, resnet56])
@pytest.mark.parametrize("head", HEADS)
def test_cifar_resnet_shapes(factory, head):
    torch.manual_seed(0)
    model = factory(10, head=head)
    logits, features = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and features.shape == (2, 64)
    assert model.classifier.weight.shape == (10, 64) and model.feature_dim == 64


def test_cifar_resnet_parameter_counts():
    # Known sizes (He et al. 2016, Table 6): ResNet-20 0.27M, ResNet-32 0.46M, ResNet-56 0.85M.
    assert parameter_count(resnet20(10)) == 269_722
    assert parameter_count(resnet32(10)) == 464_154
    assert parameter_count(resnet56(10)) == 853_018
    assert parameter_count(resnet32(100)) == 470_004


def test_cifar_resnet_rejects_bad_depth_and_takes_other_channels():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        ResNetCifar(21, 10)
    logits, features = resnet20(5, in_channels=1)(torch.randn(2, 1, 16, 16))
    assert logits.shape == (2, 5) and features.shape == (2, 64)


def test_cifar_resnet_channels_last_matches_contiguous():
    torch.manual_seed(0)
    model = resnet20(10).eval()
    images = torch.randn(2, 3, 32, 32)
    expected, _ = model(images)
    model = model.to(memory_format=torch.channels_last)
    got, _ = model(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_backward_reaches_first_conv(head):
    torch.manual_seed(0)
    model = resnet20(10, head=head)
    logits, _ = model(torch.randn(2, 3, 32, 32))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


def test_features_are_not_normalized():
    torch.manual_seed(0)
    _, features = resnet20(10, head="cosine")(torch.randn(2, 3, 32, 32))
    assert not torch.allclose(features.norm(dim=1), torch.ones(2), atol=1e-3)
    assert (features >= 0).all()  # pooled post-ReLU activations


@pytest.mark.parametrize("arch, dim", [("resnet18", 512), ("resnet50", 2048), ("resnext50_32x4d", 2048)])
def test_torchvision_backbone_shapes(arch, dim):
    torch.manual_seed(0)
    model = TorchvisionBackbone(arch, 7).eval()
    with torch.no_grad():
        logits, features = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 7) and features.shape == (2, dim)
    assert model.feature_dim == dim and model.classifier.weight.shape == (7, dim)


def test_torchvision_backbone_heads_and_backward():
    torch.manual_seed(0)
    model = TorchvisionBackbone("resnet18", 5, head="etf")
    assert isinstance(model.classifier, ETFHead) and model.classifier.weight.shape == (5, 512)
    logits, _ = model(torch.randn(2, 3, 64, 64))
    logits.sum().backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="vgg16"):
        TorchvisionBackbone("vgg16", 5)


@pytest.mark.parametrize("feature_dim, num_classes", [(64, 10), (9, 10), (128, 100), (2048, 3), (1, 2)])
def test_etf_is_a_simplex(feature_dim, num_classes):
    weight = ETFHead(feature_dim, num_classes).weight
    assert weight.shape == (num_classes, feature_dim)
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(num_classes), rtol=0, atol=1e-5)
    cosine = weight @ weight.t()
    off_diagonal = ~torch.eye(num_classes, dtype=torch.bool)
    expected = torch.full_like(cosine[off_diagonal], -1.0 / (num_classes - 1))
    torch.testing.assert_close(cosine[off_diagonal], expected, rtol=0, atol=1e-5)


def test_etf_head_is_fixed_seeded_and_returns_cosines():
    head = ETFHead(64, 10)
    assert list(head.parameters()) == [] and head.bias is None
    assert "weight" in head.state_dict()
    torch.testing.assert_close(head.weight, simplex_etf(64, 10))
    assert not torch.equal(simplex_etf(64, 10, seed=1), head.weight)
    logits = head(10 * torch.randn(2, 64))
    assert logits.shape == (2, 10) and logits.abs().max() <= 1 + 1e-6


def test_etf_head_rejects_too_few_dims():
    with pytest.raises(ValueError, match="feature_dim=8.*num_classes - 1 = 9"):
        ETFHead(8, 10)
    with pytest.raises(ValueError, match="num_classes=1"):
        ETFHead(8, 1)


def test_cosine_head_is_bounded_by_scale():
    torch.manual_seed(0)
    head = CosineHead(64, 10, scale=4.0)
    assert head.bias is None and head.weight.requires_grad and head.weight.shape == (10, 64)
    logits = head(100 * torch.randn(2, 64))
    assert logits.abs().max() <= 4.0 + 1e-5
    with pytest.raises(ValueError, match="scale"):
        CosineHead(64, 10, scale=0.0)


def test_build_head():
    linear = build_head("linear", 64, 10)
    assert isinstance(linear, LinearHead) and linear.weight.shape == (10, 64) and linear.bias.shape == (10,)
    assert build_head("cosine", 64, 10, scale=8.0).scale == 8.0
    assert isinstance(build_head("etf", 64, 10), ETFHead)
    with pytest.raises(ValueError, match="'arcface'"):
        build_head("arcface", 64, 10)
