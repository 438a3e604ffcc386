"""Build any UCADI architecture at any preset by name."""

from __future__ import annotations

from collections.abc import Callable

from ucadi.model.base import CTClassifier
from ucadi.model.densenet3d import DenseNet3d
from ucadi.model.errors import ModelError
from ucadi.model.presets import ModelPreset, get_preset
from ucadi.model.resnet3d import resnet3d18, resnet3d50
from ucadi.model.xception3d import Xception3d

ARCHITECTURES: dict[str, Callable[[ModelPreset, int], CTClassifier]] = {
    "densenet3d": DenseNet3d,
    "resnet3d18": resnet3d18,
    "resnet3d50": resnet3d50,
    "xception3d": Xception3d,
}


def build_model(arch: str = "densenet3d", preset: str = "cpu-small",
                num_classes: int = 2) -> CTClassifier:
    """A freshly initialised classifier taking [B, 1, 16, H, W] and returning [B, num_classes]."""
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {arch!r}; choose one of: "
                         f"{', '.join(ARCHITECTURES)}")
    if num_classes < 2:
        raise ModelError(f"num_classes is {num_classes}; a classifier needs at least 2")
    model = ARCHITECTURES[arch](get_preset(preset), num_classes)
    model.arch = arch
    return model
