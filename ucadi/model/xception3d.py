"""A 3D-Xception-style baseline: depthwise-separable 3D convolutions with residual blocks.

Chollet's Xception (entry flow 128-256-728, eight middle-flow blocks of 728, exit flow
1024-1536-2048) with every 3x3 kernel made 3x3x3. Widths scale with `base_width / 64`; at 64 it
has about 22 M parameters, like the papers' 3D-Xception.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ucadi.model.base import CTClassifier
from ucadi.model.densenet3d import init_weights
from ucadi.model.presets import ModelPreset

MIDDLE_FLOW_BLOCKS = 8


class SeparableConv3d(nn.Sequential):
    """Depthwise 3x3x3 convolution followed by a pointwise 1x1x1 convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv3d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.Conv3d(in_channels, out_channels, 1, bias=False))


class XceptionBlock3d(nn.Module):
    """`reps` ReLU-SepConv-BN units, optional stride-2 max pooling, residual shortcut."""

    def __init__(self, in_channels: int, out_channels: int, reps: int, downsample: bool,
                 relu_first: bool = True) -> None:
        super().__init__()
        units: list[nn.Module] = []
        channels = in_channels
        for rep in range(reps):
            if relu_first or rep > 0:
                units.append(nn.ReLU(inplace=False))
            units += [SeparableConv3d(channels, out_channels), nn.BatchNorm3d(out_channels)]
            channels = out_channels
        if downsample:
            units.append(nn.MaxPool3d(3, stride=2, padding=1))
        self.body = nn.Sequential(*units)
        stride = 2 if downsample else 1
        self.shortcut: nn.Module = nn.Identity()
        if downsample or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm3d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual sum of the separable-convolution path and the shortcut."""
        return self.body(x) + self.shortcut(x)


class Xception3d(CTClassifier):
    """Entry, middle and exit flows of Xception in 3D."""

    cam_layer = "exit"

    def __init__(self, preset: ModelPreset, num_classes: int) -> None:
        super().__init__(preset, num_classes)

        def w(channels: int) -> int:
            return max(4, channels * preset.base_width // 64)

        self.stem = nn.Sequential(
            nn.Conv3d(1, w(32), 3, stride=(1, 2, 2), padding=1, bias=False),
            nn.BatchNorm3d(w(32)), nn.ReLU(inplace=True),
            nn.Conv3d(w(32), w(64), 3, padding=1, bias=False), nn.BatchNorm3d(w(64)),
            nn.ReLU(inplace=True))
        self.entry = nn.Sequential(
            XceptionBlock3d(w(64), w(128), 2, downsample=True, relu_first=False),
            XceptionBlock3d(w(128), w(256), 2, downsample=True),
            XceptionBlock3d(w(256), w(728), 2, downsample=True))
        self.middle = nn.Sequential(*(XceptionBlock3d(w(728), w(728), 3, downsample=False)
                                      for _ in range(MIDDLE_FLOW_BLOCKS)))
        self.exit = nn.Sequential(
            XceptionBlock3d(w(728), w(1024), 2, downsample=True),
            SeparableConv3d(w(1024), w(1536)), nn.BatchNorm3d(w(1536)), nn.ReLU(inplace=True),
            SeparableConv3d(w(1536), w(2048)), nn.BatchNorm3d(w(2048)), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(w(2048), num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes]."""
        self.check_input(x)
        features = self.exit(self.middle(self.entry(self.stem(x))))
        return self.classifier(torch.flatten(F.adaptive_avg_pool3d(features, 1), 1))
