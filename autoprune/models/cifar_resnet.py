"""CIFAR-10 ResNets (He et al. 2016, option-A shortcut), state-dict compatible with akamaster's
checkpoints."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autoprune.models._entry import ModelEntry


class PadShortcut(nn.Module):
    """Parameter-free option-A shortcut: subsample by 2 and zero-pad the channel dimension."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class SelectShortcut(nn.Conv2d):
    """The option-A shortcut written as a frozen 1×1 stride-2 convolution whose weight is the
    0/1 matrix embedding the input channels between the zero pads: the same function as
    :class:`PadShortcut`, but a layer torch-pruning understands, so residual stage widths can be
    pruned too (the weight stays a channel selection after pruning)."""

    def __init__(self, in_planes: int, pad: int) -> None:
        super().__init__(in_planes, in_planes + 2 * pad, 1, stride=2, bias=False)
        with torch.no_grad():
            self.weight.zero_()
            for i in range(in_planes):
                self.weight[pad + i, i] = 1.0
        self.weight.requires_grad_(False)


def to_prunable_shortcuts(model: nn.Module) -> nn.Module:
    """Replace every :class:`PadShortcut` by the equivalent :class:`SelectShortcut` (in place)."""
    for block in model.modules():
        if isinstance(block, BasicBlock) and isinstance(block.shortcut, PadShortcut):
            block.shortcut = SelectShortcut(block.conv1.in_channels, block.shortcut.pad)
    return model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(planes // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs: 16/32/64-channel stages, global pooling, linear head."""

    def __init__(self, depth: int, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.in_planes = width
        self.layer1 = self._make_layer(width, n, 1)
        self.layer2 = self._make_layer(2 * width, n, 2)
        self.layer3 = self._make_layer(4 * width, n, 2)
        self.linear = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _entry(depth: int, checkpoint: str | None = None) -> ModelEntry:
    return ModelEntry(CifarResNet, (3, 32, 32), checkpoint, (("depth", depth),))


# akamaster/pytorch_resnet_cifar10 checkpoints (BSD-2): bundled (20) or ../shared/data (32-56).
resnet8, resnet14 = _entry(8), _entry(14)
resnet20 = _entry(20, "resnet20-12fca82f.th")
resnet32 = _entry(32, "resnet32-d509ac18.th")
resnet44 = _entry(44, "resnet44-014dd654.th")
resnet56 = _entry(56, "resnet56-4bfd9763.th")
