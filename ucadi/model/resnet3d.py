"""3D-ResNet baselines (18 and 50 layers) for the papers' comparison table.

Full 3x3x3 (and 1x1x1) kernels as in MedicalNet's 3D-ResNets; the stem keeps the 16 slices
(stride 1 along z) because a study has only 16 of them. Widths scale with the preset's
`base_width` (64 gives the original networks, ~33 M and ~46 M parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ucadi.model.base import CTClassifier
from ucadi.model.densenet3d import init_weights
from ucadi.model.presets import ModelPreset

STAGE_STRIDES = (1, 2, 2, 2)


class BasicBlock3d(nn.Module):
    """Two 3x3x3 convolutions with an identity (or projected) shortcut."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        out = channels * self.expansion
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm3d(channels), nn.ReLU(inplace=True),
            nn.Conv3d(channels, out, 3, padding=1, bias=False), nn.BatchNorm3d(out))
        self.shortcut = _shortcut(in_channels, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual sum followed by ReLU."""
        return F.relu(self.body(x) + self.shortcut(x))


class Bottleneck3d(nn.Module):
    """1x1x1 reduce, 3x3x3, 1x1x1 expand (x4), with a shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        out = channels * self.expansion
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, channels, 1, bias=False), nn.BatchNorm3d(channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm3d(channels), nn.ReLU(inplace=True),
            nn.Conv3d(channels, out, 1, bias=False), nn.BatchNorm3d(out))
        self.shortcut = _shortcut(in_channels, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual sum followed by ReLU."""
        return F.relu(self.body(x) + self.shortcut(x))


def _shortcut(in_channels: int, out: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out:
        return nn.Identity()
    return nn.Sequential(nn.Conv3d(in_channels, out, 1, stride=stride, bias=False),
                         nn.BatchNorm3d(out))


class ResNet3d(CTClassifier):
    """3D-ResNet with `layers` blocks per stage of `block` type."""

    cam_layer = "stages"

    def __init__(self, preset: ModelPreset, num_classes: int,
                 block: type[BasicBlock3d] | type[Bottleneck3d], layers: tuple[int, ...]) -> None:
        super().__init__(preset, num_classes)
        width = preset.base_width
        self.stem = nn.Sequential(
            nn.Conv3d(1, width, kernel_size=7, stride=(1, 2, 2), padding=3, bias=False),
            nn.BatchNorm3d(width), nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=3, stride=2, padding=1))
        stages: list[nn.Module] = []
        in_channels = width
        for index, (count, stride) in enumerate(zip(layers, STAGE_STRIDES, strict=True)):
            channels = width * 2 ** index
            for position in range(count):
                stages.append(block(in_channels, channels, stride if position == 0 else 1))
                in_channels = channels * block.expansion
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(in_channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes]."""
        self.check_input(x)
        features = self.stages(self.stem(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool3d(features, 1), 1))


def resnet3d18(preset: ModelPreset, num_classes: int) -> ResNet3d:
    """3D-ResNet-18 (basic blocks 2-2-2-2)."""
    return ResNet3d(preset, num_classes, BasicBlock3d, (2, 2, 2, 2))


def resnet3d50(preset: ModelPreset, num_classes: int) -> ResNet3d:
    """3D-ResNet-50 (bottleneck blocks 3-4-6-3)."""
    return ResNet3d(preset, num_classes, Bottleneck3d, (3, 4, 6, 3))
