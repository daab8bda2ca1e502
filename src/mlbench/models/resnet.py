"""ResNet for CIFAR (He et al. 2015, §4.2), version 1 (post-activation).

Depth 6n+2 (20, 32, 44, 56, 110): three stages of n basic blocks with 16, 32, 64 channels.
Shortcuts that change shape use a 1x1 convolution + batch norm ("B"), as the original MLBench
did: its ResNet-20 all-reduced 1.09 MB of gradients, which is this model's 272,474 parameters.
Option "A" (parameter-free zero-padding shortcut, the paper's CIFAR choice) is available.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

VALID_DEPTHS = (20, 32, 44, 56, 110)


def he_init(model: nn.Module) -> None:
    """He et al.'s initialisation, shared by the CIFAR ResNets and ResNet-50: normal with
    fan-out variance for every convolution, BN at the identity (γ 1, β 0). Modules are visited
    in ``modules()`` order, so the draws (and the golden 1a curves) do not depend on where
    this is called from."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _PadShortcut(nn.Module):
    """Option A: subsample by 2 and zero-pad channels."""

    def __init__(self, extra: int) -> None:
        super().__init__()
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        return nn.functional.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            if shortcut == "A":
                self.shortcut = _PadShortcut(cout - cin)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(
        self, depth: int = 20, num_classes: int = 10, shortcut: Literal["A", "B"] = "B"
    ) -> None:
        super().__init__()
        if depth not in VALID_DEPTHS:
            raise ValueError(f"ResNet depth must be one of {VALID_DEPTHS}, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers: list[nn.Module] = []
        cin = 16
        for i, cout in enumerate((16, 32, 64)):
            for j in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1, shortcut))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)
