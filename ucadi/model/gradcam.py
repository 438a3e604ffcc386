"""3D Grad-CAM (Selvaraju et al. 2017) over a study: where the evidence for a class lies.

The activations of one layer (by default the architecture's `cam_layer`, the last feature maps
before pooling) are weighted by the spatial mean of the class score's gradient, summed over
channels, rectified, upsampled trilinearly to the input's (slices, H, W) and scaled to [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ucadi.model.base import CTClassifier
from ucadi.model.errors import ModelError, ModelInputError


def grad_cam(model: CTClassifier, x: torch.Tensor | np.ndarray, target_class: int,
             layer: str | None = None) -> np.ndarray:
    """Heatmap (slices, H, W) float32 in [0, 1] for one study, aligned voxel-for-voxel to x."""
    study = torch.as_tensor(x, dtype=torch.float32)
    if study.dim() == 3:
        study = study[None, None]
    elif study.dim() == 4:
        study = study[None]
    if study.dim() != 5 or study.shape[0] != 1:
        raise ModelInputError(f"grad_cam takes one study (slices, H, W) or [1, 1, slices, H, W]; "
                              f"got shape {tuple(study.shape)}")
    if not 0 <= target_class < model.num_classes:
        raise ModelError(f"target_class {target_class} out of range; the model has "
                         f"{model.num_classes} classes (0..{model.num_classes - 1})")
    name = layer or model.cam_layer
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ModelError(f"model has no layer {name!r} for Grad-CAM") from None
    device = next(model.parameters()).device
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        output.register_hook(lambda grad: captured.__setitem__("grad", grad))
        captured["activation"] = output

    was_training = model.training
    model.eval()
    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            # Gradient w.r.t. the input keeps the graph alive even if the weights are frozen.
            logits = model(study.to(device).requires_grad_(True))
            logits[0, target_class].backward()
    finally:
        handle.remove()
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    activation = captured["activation"].detach()
    weights = captured["grad"].mean(dim=(2, 3, 4), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(study.shape[2:]), mode="trilinear", align_corners=False)
    cam = cam[0, 0].cpu().numpy().astype(np.float32)
    peak = float(cam.max())
    return cam / peak if peak > 0 else np.zeros_like(cam)
