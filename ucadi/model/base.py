"""What every UCADI classifier shares: input checks and the layer Grad-CAM reads."""

from __future__ import annotations

import torch
from torch import nn

from ucadi.model.errors import ModelInputError
from ucadi.model.presets import ModelPreset


class CTClassifier(nn.Module):
    """A 3D CNN mapping [B, 1, slices, H, W] float studies to [B, num_classes] logits."""

    # Name of the submodule whose output Grad-CAM weighs (set by each architecture).
    cam_layer: str = ""
    # Registry name of the architecture (set by build_model; recorded in model cards).
    arch: str = ""

    def __init__(self, preset: ModelPreset, num_classes: int) -> None:
        super().__init__()
        self.preset = preset
        self.num_classes = num_classes

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ModelInputError unless x is a finite float batch of the preset's shape."""
        expected = (1, *self.preset.input_shape)
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise ModelInputError(
                f"model input has shape {tuple(x.shape)}; preset {self.preset.name!r} accepts "
                f"[batch, {', '.join(map(str, expected))}] (batch, channel, slices, H, W)")
        if not x.is_floating_point():
            raise ModelInputError(f"model input has dtype {x.dtype}; a float tensor is needed")
        # Meta tensors (FLOP counting) hold no values. On CUDA the check costs a device sync;
        # it is still cheap next to one forward pass.
        if x.device.type != "meta" and not bool(torch.isfinite(x).all()):
            raise ModelInputError("model input contains NaN or infinite values; preprocess the "
                                  "study again (z-scored HU values are always finite)")
