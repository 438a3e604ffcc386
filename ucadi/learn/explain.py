"""Grad-CAM explanations of a study: heatmaps on the model input and on the original slices."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ucadi.ct import PreprocessConfig, open_study, sample_slice_indices, zscore  # noqa: E402
from ucadi.ct.preprocess import resize_slices, window_and_resize  # noqa: E402
from ucadi.learn.predict import predict_inputs  # noqa: E402
from ucadi.model.base import CTClassifier  # noqa: E402
from ucadi.model.gradcam import grad_cam  # noqa: E402

# Heatmaps at the original resolution are stored as 0..255 (value / 255) to keep them small.
ORIGINAL_HEATMAP_LEVELS = 255
MONTAGE_COLUMNS = 4
HEATMAP_ALPHA = 0.4


@dataclass
class StudyExplanation:
    """Grad-CAM of one sampling of a study and where its slices come from."""

    inputs: np.ndarray          # (slices, H, W) z-scored model input
    heatmap: np.ndarray         # (slices, H, W) in [0, 1], aligned to `inputs`
    slice_indices: np.ndarray   # (slices,) original slice index of each input slice
    slices_hu: np.ndarray       # (slices, Y, X) the sampled original slices in HU
    num_slices: int             # slices in the original series
    probabilities: np.ndarray   # (classes,) for this sampling
    target_class: int

    def heatmap_original(self) -> np.ndarray:
        """(num_slices, Y, X) uint8 heatmap on the original grid; 0 outside the sampled span.

        In-plane bilinear upsampling; along z, linear interpolation between the sampled slices.
        """
        height, width = self.slices_hu.shape[1:]
        upsampled = F.interpolate(torch.from_numpy(self.heatmap)[None], size=(height, width),
                                  mode="bilinear", align_corners=False)[0].numpy()
        volume = np.zeros((self.num_slices, height, width), dtype=np.uint8)
        positions = self.slice_indices.astype(float)
        last = len(positions) - 1
        for z in range(int(positions[0]), int(positions[-1]) + 1):
            lower = min(int(np.searchsorted(positions, z, side="right")) - 1, last)
            upper = min(lower + 1, last)
            span = positions[upper] - positions[lower]
            weight = 0.0 if span == 0 else (z - positions[lower]) / span
            value = (1 - weight) * upsampled[lower] + weight * upsampled[upper]
            volume[z] = np.round(np.clip(value, 0, 1) * ORIGINAL_HEATMAP_LEVELS).astype(np.uint8)
        return volume


def explain_study(model: CTClassifier, path: str | Path, config: PreprocessConfig, *,
                  target_class: int | None = None, seed: int = 0,
                  layer: str | None = None) -> StudyExplanation:
    """Grad-CAM for one sampling (by `seed`) of a study; target defaults to the predicted class."""
    with open_study(path) as study:
        # The same draw preprocess_study(path, config, samples=1, seed=seed) makes.
        indices = sample_slice_indices(study.num_slices, config.slices,
                                       np.random.default_rng(seed))
        slices_hu = study.read_slices_hu(indices.tolist())
        num_slices = study.num_slices
    inputs = zscore(window_and_resize(slices_hu, config)[None])[0]
    device = str(next(model.parameters()).device)
    probabilities = predict_inputs(model, inputs[None], device=device)[0]
    target = int(probabilities.argmax()) if target_class is None else target_class
    heatmap = grad_cam(model, inputs, target, layer=layer)
    return StudyExplanation(inputs, heatmap, indices, slices_hu.astype(np.float32), num_slices,
                            probabilities, target)


def lesion_mask_on_input(mask: np.ndarray, slice_indices: np.ndarray,
                         config: PreprocessConfig) -> np.ndarray:
    """A lesion mask (z, y, x) of the original study on the model-input grid (slices, H, W).

    A model-input voxel counts as lesion when any part of its footprint is (resized fraction > 0),
    so small lesions are not lost when shrinking 512 -> 32.
    """
    chosen = np.asarray(mask)[np.asarray(slice_indices)].astype(np.float32)
    return resize_slices(chosen, config.size) > 0


def pointing_game(heatmap: np.ndarray, lesion: np.ndarray) -> tuple[bool, float]:
    """Whether the heatmap's peak lies in the lesion, and the chance of that for a random voxel.

    The chance level (lesion fraction of the grid) is the baseline the hit rate is judged against.
    """
    peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return bool(lesion[peak]), float(lesion.mean())


def save_explanation(out_dir: Path, explanation: StudyExplanation,
                     class_names: list[str], window_hu: tuple[float, float]) -> list[Path]:
    """heatmap.npy, heatmap_original.npy, explanation.json and montage.png in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "heatmap.npy", out_dir / "heatmap_original.npy",
             out_dir / "explanation.json", out_dir / "montage.png"]
    np.save(files[0], explanation.heatmap)
    np.save(files[1], explanation.heatmap_original())
    files[2].write_text(json.dumps({
        "target_class": class_names[explanation.target_class],
        "probabilities": dict(zip(class_names, map(float, explanation.probabilities),
                                       strict=True)),
        "slice_indices": explanation.slice_indices.tolist(),
        "num_slices": explanation.num_slices,
        "heatmap": "heatmap.npy: (slices, H, W) float32 in [0, 1], aligned to the model input",
        "heatmap_original": "heatmap_original.npy: (num_slices, Y, X) uint8, value/255, aligned "
                            "to the original slices; 0 outside the sampled span",
    }, indent=2) + "\n")
    save_montage(files[3], explanation, class_names, window_hu)
    return files


def save_montage(path: Path, explanation: StudyExplanation, class_names: list[str],
                 window_hu: tuple[float, float]) -> None:
    """The sampled original slices in the lung window with the heatmap over them."""
    count = len(explanation.slice_indices)
    rows = -(-count // MONTAGE_COLUMNS)
    figure, axes = plt.subplots(rows, MONTAGE_COLUMNS, figsize=(2.6 * MONTAGE_COLUMNS, 2.6 * rows))
    height, width = explanation.slices_hu.shape[1:]
    upsampled = F.interpolate(torch.from_numpy(explanation.heatmap)[None], size=(height, width),
                              mode="bilinear", align_corners=False)[0].numpy()
    for i, axis in enumerate(np.ravel(axes)):
        axis.axis("off")
        if i >= count:
            continue
        axis.imshow(explanation.slices_hu[i], cmap="gray", vmin=window_hu[0], vmax=window_hu[1])
        axis.imshow(upsampled[i], cmap="jet", alpha=HEATMAP_ALPHA, vmin=0, vmax=1)
        axis.set_title(f"slice {int(explanation.slice_indices[i])}", fontsize=8)
    probs = ", ".join(f"{n} {p:.2f}" for n, p in zip(class_names, explanation.probabilities,
                                                            strict=True))
    figure.suptitle(f"Grad-CAM for {class_names[explanation.target_class]} ({probs})")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
