"""The papers' 3D-DenseNet (UCADI): six dense blocks, two transmit blocks, DropBlock, LeakyReLU.

Layout, following the reference implementation (HUST-EIC-AI-LAB/UCADI, model.py):
stem 3x3x3 conv -> DropBlock -> [dense, dense, transmit] x 2 -> dense, dense -> BN + LeakyReLU
-> DropBlock -> global average pool -> linear. A dense block is BN-act-1x1x1 conv (bottleneck)
then BN-act-3x3x3 conv (growth channels), its input concatenated to its output; a transmit block
is BN-act-1x1x1 conv (halving channels) then 2x average pooling. The fourteen 3D convolutions the
papers count are the twelve in the dense blocks and the two in the transmit blocks; the stem is
the input layer. At the `paper` preset this has about 0.73 M parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ucadi.model.base import CTClassifier
from ucadi.model.dropblock import DropBlock3d
from ucadi.model.presets import ModelPreset

LEAKY_RELU_SLOPE = 0.2
# The paper's BN momentum 0.9 means running = 0.9 * running + 0.1 * batch: PyTorch's 0.1.
BN_MOMENTUM = 0.1
DENSE_BLOCKS_PER_STAGE = (2, 2, 2)
TRANSMIT_COMPRESSION = 2


def _norm_act(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm3d(channels, momentum=BN_MOMENTUM),
            nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True)]


class DenseBlock3d(nn.Module):
    """Bottleneck 1x1x1 then 3x3x3 convolution; output = input ++ new `growth` channels."""

    def __init__(self, in_channels: int, growth: int, bottleneck_factor: int) -> None:
        super().__init__()
        inner = bottleneck_factor * growth
        self.layers = nn.Sequential(
            *_norm_act(in_channels), nn.Conv3d(in_channels, inner, kernel_size=1),
            *_norm_act(inner), nn.Conv3d(inner, growth, kernel_size=3, padding=1))
        self.out_channels = in_channels + growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the input with the block's new feature maps."""
        return torch.cat([x, self.layers(x)], dim=1)


class TransmitBlock3d(nn.Sequential):
    """BN, LeakyReLU, 1x1x1 convolution halving the channels, 2x2x2 average pooling."""

    def __init__(self, in_channels: int) -> None:
        out = in_channels // TRANSMIT_COMPRESSION
        super().__init__(*_norm_act(in_channels), nn.Conv3d(in_channels, out, kernel_size=1),
                         nn.AvgPool3d(kernel_size=2, stride=2))
        self.out_channels = out


class DenseNet3d(CTClassifier):
    """3D-DenseNet classifier of the UCADI papers."""

    cam_layer = "head"

    def __init__(self, preset: ModelPreset, num_classes: int) -> None:
        super().__init__(preset, num_classes)
        channels = preset.stem_channels
        self.stem = nn.Sequential(nn.Conv3d(1, channels, kernel_size=3, padding=1),
                                  *_norm_act(channels))
        self.drop_in = DropBlock3d(preset.dropblock_prob, preset.dropblock_size)
        blocks: list[nn.Module] = []
        for stage, count in enumerate(DENSE_BLOCKS_PER_STAGE):
            for _ in range(count):
                block = DenseBlock3d(channels, preset.growth_rate, preset.bottleneck_factor)
                blocks.append(block)
                channels = block.out_channels
            if stage < len(DENSE_BLOCKS_PER_STAGE) - 1:
                transmit = TransmitBlock3d(channels)
                blocks.append(transmit)
                channels = transmit.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*_norm_act(channels))
        self.drop_out = DropBlock3d(preset.dropblock_prob, preset.dropblock_size)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes] for studies [B, 1, slices, H, W]."""
        self.check_input(x)
        features = self.drop_out(self.head(self.blocks(self.drop_in(self.stem(x)))))
        return self.classifier(torch.flatten(F.adaptive_avg_pool3d(features, 1), 1))


def init_weights(model: nn.Module) -> None:
    """Kaiming-uniform convolutions and linear layers, zero biases (as the reference code)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.Linear)):
            nn.init.kaiming_uniform_(module.weight, a=LEAKY_RELU_SLOPE, mode="fan_in",
                                     nonlinearity="leaky_relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
