"""mlbench.models.resnet: ResNet v1 for CIFAR."""

from __future__ import annotations

import pytest
import torch

from mlbench.models.resnet import VALID_DEPTHS, CifarResNet, _PadShortcut


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet20_option_b_parameter_count():
    # the original MLBench's ResNet-20: 272,474 parameters (1.09 MB of fp32 gradients)
    assert _params(CifarResNet(20, 10, "B")) == 272474


@pytest.mark.parametrize(
    ("depth", "count"),
    # the published option-A counts (0.27M, 0.46M, 0.66M, 0.85M, 1.7M in He et al. Table 6)
    [(20, 269722), (32, 464154), (44, 658586), (56, 853018), (110, 1727962)],
)
def test_option_a_parameter_counts(depth, count):
    assert _params(CifarResNet(depth, 10, "A")) == count


def test_option_b_adds_two_projection_shortcuts():
    # 1x1 conv 16->32 + BN(32), 1x1 conv 32->64 + BN(64)
    extra = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert _params(CifarResNet(20, 10, "B")) - _params(CifarResNet(20, 10, "A")) == extra


@pytest.mark.parametrize("depth", VALID_DEPTHS)
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_builds_and_forwards(depth, shortcut):
    torch.manual_seed(0)
    model = CifarResNet(depth, 10, shortcut)
    n_blocks = sum(1 for m in model.modules() if m.__class__.__name__ == "BasicBlock")
    assert n_blocks == 3 * (depth - 2) // 6
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_num_classes_and_backward():
    torch.manual_seed(0)
    model = CifarResNet(20, num_classes=7)
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("depth", [0, 18, 22, 50, 1202, -20])
def test_invalid_depth(depth):
    with pytest.raises(ValueError, match="depth"):
        CifarResNet(depth)


def test_pad_shortcut_subsamples_and_zero_pads():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    out = _PadShortcut(extra=4)(x)
    assert out.shape == (1, 6, 2, 2)
    assert torch.equal(out[:, 2:4], x[:, :, ::2, ::2])  # original channels in the middle
    assert out[:, :2].abs().sum() == 0 and out[:, 4:].abs().sum() == 0


def test_batchnorm_initialised_to_identity():
    model = CifarResNet(20)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
