"""ResNet-50 v1.5 for ImageNet (task 1b), written here rather than imported from torchvision.

Why not torchvision: its wheels for this torch do not import on a CPU-only torch, and the model is
small enough to own. Architecture (He et al. 2015, Table 1, 50-layer column): a 7x7/2 stem and
3x3/2 max pool, four stages of 3, 4, 6, 3 bottleneck blocks (1x1 → 3x3 → 1x1, expansion 4;
widths 64, 128, 256, 512), global average pool and one fully-connected layer.

"v1.5" (NVIDIA's name, what MLPerf's reference and torchvision's ``resnet50`` build): the stride of
a down-sampling block sits in its 3x3 convolution, not in the first 1x1 as in the paper — the
1x1/2 of v1 throws away three quarters of its input. Shortcuts that change shape are 1x1
convolutions + batch norm ("option B"). At 1000 classes: 25,557,032 parameters.

Initialisation: He et al.'s normal init (fan_out, ReLU gain) for convolutions; BN γ=1, β=0 except
the *last* BN of each residual branch, whose γ starts at 0 (Goyal et al. 2017, §5.1,
"zero γ"): every block then starts as the identity map of its shortcut, which is what lets a
large-batch run take the warm-up's larger steps. The fully-connected layer starts from N(0, 0.01²)
with zero bias (Goyal et al. §5.1).
"""

from __future__ import annotations

import torch
from torch import nn

from mlbench.models.resnet import he_init

#: bottleneck blocks per stage; stage i's inner width is width·2^i (64, 128, 256, 512), its
#: output 4x that
LAYERS = (3, 4, 6, 3)
EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 reduce → 3x3 (carries the stride: v1.5) → 1x1 expand, added to the shortcut."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * EXPANSION
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


class ResNet50(nn.Module):
    """ResNet-50 v1.5. ``zero_init_residual``: start each block's last BN γ at 0 (Goyal et al.).
    ``width``: the stem's and first stage's channels, 64 for ResNet-50; a smaller one keeps the
    depth and every structural feature at a fraction of the cost (tests, not benchmarks)."""

    def __init__(
        self, num_classes: int = 1000, *, zero_init_residual: bool = True, width: int = 64
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages: list[nn.Module] = []
        cin = width
        for i, blocks in enumerate(LAYERS):
            inner = width * 2**i
            stage: list[nn.Module] = []
            for j in range(blocks):
                stage.append(Bottleneck(cin, inner, 2 if (i > 0 and j == 0) else 1))
                cin = inner * EXPANSION
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, num_classes)
        he_init(self)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)
