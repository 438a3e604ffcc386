"""CycleGAN networks (Zhu et al. 2017): the ResNet generator and the PatchGAN discriminator,
on one-channel CT slices scaled to [-1, 1]."""

from __future__ import annotations

import torch
from torch import nn

from ucadi.augment.presets import CycleGANPreset


class ResidualBlock(nn.Module):
    """Two reflection-padded 3x3 convolutions with instance norm, added to the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """c7s1-w, d2w, d4w, R4w x blocks, u2w, uw, c7s1-1, tanh: (N, 1, H, W) -> same shape."""

    def __init__(self, width: int, blocks: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(1, width, 7),
                                   nn.InstanceNorm2d(width), nn.ReLU(inplace=True)]
        channels = width
        for _ in range(2):
            layers += [nn.Conv2d(channels, channels * 2, 3, stride=2, padding=1),
                       nn.InstanceNorm2d(channels * 2), nn.ReLU(inplace=True)]
            channels *= 2
        layers += [ResidualBlock(channels) for _ in range(blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(channels, channels // 2, 3, stride=2, padding=1,
                                          output_padding=1),
                       nn.InstanceNorm2d(channels // 2), nn.ReLU(inplace=True)]
            channels //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(channels, 1, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: C-w (no norm), then `layers` - 1 strided C-2^k w, one stride-1 layer and a
    1-channel map of real/fake scores per patch."""

    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        modules: list[nn.Module] = [nn.Conv2d(1, width, 4, stride=2, padding=1),
                                    nn.LeakyReLU(0.2, inplace=True)]
        channels = width
        for index in range(1, layers + 1):
            out = width * min(2 ** index, 8)
            stride = 2 if index < layers else 1
            modules += [nn.Conv2d(channels, out, 4, stride=stride, padding=1),
                        nn.InstanceNorm2d(out), nn.LeakyReLU(0.2, inplace=True)]
            channels = out
        modules.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_weights(module: nn.Module) -> None:
    """N(0, 0.02) convolution weights, zero biases (the CycleGAN reference's `normal` init)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_generator(preset: CycleGANPreset) -> ResnetGenerator:
    """A generator of the preset's widths, initialised (seed with torch.manual_seed first)."""
    generator = ResnetGenerator(preset.generator_width, preset.residual_blocks)
    generator.apply(init_weights)
    return generator


def build_discriminator(preset: CycleGANPreset) -> PatchDiscriminator:
    """A discriminator of the preset's widths, initialised."""
    discriminator = PatchDiscriminator(preset.discriminator_width, preset.discriminator_layers)
    discriminator.apply(init_weights)
    return discriminator
