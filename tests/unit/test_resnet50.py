"""mlbench.models.resnet50: ResNet-50 v1.5 (task 1b)."""

from __future__ import annotations

import math

import pytest
import torch

from mlbench.models.resnet50 import LAYERS, Bottleneck, ResNet50


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _blocks(model: torch.nn.Module) -> list[Bottleneck]:
    return [m for m in model.modules() if isinstance(m, Bottleneck)]


def test_parameter_count_at_1000_classes():
    # torchvision's resnet50 and MLPerf's reference: 25,557,032
    assert _params(ResNet50(1000)) == 25_557_032


def test_num_classes_changes_only_the_classifier():
    # fc: 2048 inputs + 1 bias per class
    assert _params(ResNet50(1000)) - _params(ResNet50(10)) == 990 * 2049


def test_bottleneck_layout_and_stride_in_the_3x3():
    model = ResNet50(1000)
    blocks = _blocks(model)
    assert len(blocks) == sum(LAYERS) == 16
    strided = [b for b in blocks if b.conv2.stride == (2, 2)]
    assert len(strided) == 3  # the first block of stages 2, 3, 4 (v1.5: the 3x3 carries it)
    assert all(b.conv1.stride == (1, 1) and b.conv3.stride == (1, 1) for b in blocks)
    # projection shortcuts where the shape changes: the first block of every stage
    projections = [b for b in blocks if not isinstance(b.shortcut, torch.nn.Identity)]
    assert len(projections) == 4
    assert [b.conv3.out_channels for b in projections] == [256, 512, 1024, 2048]


@pytest.mark.parametrize("size", [64, 96])
def test_output_shapes_at_small_resolution(size):
    torch.manual_seed(0)
    model = ResNet50(7)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_zero_init_of_the_last_bn_gamma_in_every_block():
    model = ResNet50(10)
    for b in _blocks(model):
        assert torch.count_nonzero(b.bn3.weight) == 0
        assert torch.all(b.bn1.weight == 1) and torch.all(b.bn2.weight == 1)
    assert torch.all(model.bn1.weight == 1)
    off = ResNet50(10, zero_init_residual=False)
    assert all(torch.all(b.bn3.weight == 1) for b in _blocks(off))


def test_he_init_fan_out_and_small_classifier():
    torch.manual_seed(0)
    model = ResNet50(1000)
    conv = model.layer3[0].conv2  # 256 → 256, 3x3: fan_out = 256·9
    expected = math.sqrt(2.0 / (256 * 9))
    assert float(conv.weight.detach().std()) == pytest.approx(expected, rel=0.02)
    assert float(model.fc.weight.detach().std()) == pytest.approx(0.01, rel=0.02)
    assert torch.count_nonzero(model.fc.bias) == 0


@pytest.mark.parametrize(("stage", "index"), [("layer1", 0), ("layer1", 1), ("layer3", 0)])
def test_a_zero_init_block_is_its_shortcut_at_init(stage, index):
    """The residual branch ends in γ=0, β=0: the block returns relu(shortcut(x)) exactly, in
    training mode (batch statistics) as in eval mode — x itself for an identity shortcut."""
    torch.manual_seed(1)
    model = ResNet50(10)
    block = getattr(model, stage)[index]
    x = torch.relu(torch.randn(4, block.conv1.in_channels, 16, 16))  # a post-ReLU input
    for train in (True, False):
        block.train(train)
        with torch.no_grad():
            out = block(x)
            expected = torch.relu(block.shortcut(x))
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        if isinstance(block.shortcut, torch.nn.Identity):
            torch.testing.assert_close(out, x, rtol=0, atol=0)


def test_without_zero_init_a_block_is_not_its_shortcut():
    torch.manual_seed(1)
    block = ResNet50(10, zero_init_residual=False).layer1[1]
    x = torch.relu(torch.randn(4, 256, 16, 16))
    with torch.no_grad():
        assert not torch.allclose(block(x), x)


def test_a_narrow_model_keeps_the_structure():
    narrow = ResNet50(10, width=8)
    wide = ResNet50(10)
    assert len(_blocks(narrow)) == len(_blocks(wide))
    assert narrow.fc.in_features == 8 * 8 * 4  # width·2^3·expansion
    assert _params(narrow) < _params(wide) / 50
    assert narrow(torch.randn(2, 3, 32, 32)).shape == (2, 10)
