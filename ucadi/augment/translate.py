"""Contrast -> non-contrast translation of windowed HU slices, and the training-time
augmentation that applies it to a site's contrast-enhanced studies at random."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ucadi.augment.presets import AugmentError
from ucadi.ct import PreprocessConfig

# Slices translated per generator call (bounds memory at the paper's 128x128).
TRANSLATE_BATCH = 64


def to_unit(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """HU clipped to the window, scaled to [-1, 1] (the generator's tanh range)."""
    low, high = window
    return (2.0 * (np.clip(hu, low, high) - low) / (high - low) - 1.0).astype(np.float32)


def from_unit(unit: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Inverse of to_unit: [-1, 1] back to HU inside the window."""
    low, high = window
    return ((np.clip(unit, -1.0, 1.0) + 1.0) * 0.5 * (high - low) + low).astype(np.float32)


class ContrastTranslator:
    """A trained contrast -> non-contrast generator and the slices it was trained on: its
    size and HU window (the classifier's preprocessing must match)."""

    def __init__(self, generator: torch.nn.Module, size: int, window_hu: tuple[float, float],
                 card: dict[str, Any] | None = None) -> None:
        self.generator = generator.eval()
        self.size = int(size)
        self.window_hu = (float(window_hu[0]), float(window_hu[1]))
        self.card = card or {}

    def check_matches(self, config: PreprocessConfig) -> None:
        """AugmentError unless the classifier's preprocessing produces the slices this
        generator was trained on (same in-plane size, same HU window)."""
        if tuple(config.size) != (self.size, self.size) or \
                tuple(config.window_hu) != self.window_hu:
            raise AugmentError(
                f"the contrast augmentation model was trained on {self.size}x{self.size} slices "
                f"in the HU window {self.window_hu}, but this training preprocesses to "
                f"{config.size[0]}x{config.size[1]} in {tuple(config.window_hu)}; train a "
                f"CycleGAN for this model preset (`ucadi augment cyclegan train --preset ...`)")

    @torch.no_grad()
    def translate(self, slices_hu: np.ndarray) -> np.ndarray:
        """(..., size, size) windowed HU slices -> the same shape, non-contrast-looking, in HU
        inside the window."""
        if slices_hu.shape[-2:] != (self.size, self.size):
            raise AugmentError(f"slices of {slices_hu.shape[-2]}x{slices_hu.shape[-1]} cannot "
                               f"be translated by a generator trained on "
                               f"{self.size}x{self.size} slices")
        flat = to_unit(slices_hu.reshape(-1, self.size, self.size), self.window_hu)
        out = np.empty_like(flat)
        for start in range(0, len(flat), TRANSLATE_BATCH):
            batch = torch.from_numpy(flat[start:start + TRANSLATE_BATCH]).unsqueeze(1)
            out[start:start + TRANSLATE_BATCH] = self.generator(batch).squeeze(1).numpy()
        return from_unit(out, self.window_hu).reshape(slices_hu.shape)


@dataclass
class ContrastAugmentation:
    """Training augmentation: each epoch a contrast-enhanced study's sampled slices are
    replaced by their translation with `probability` (non-contrast studies are untouched)."""

    translator: ContrastTranslator
    probability: float = 0.5
    source: str = ""  # the model folder, for cards and logs

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise AugmentError(f"contrast augmentation probability must be in [0, 1]; got "
                               f"{self.probability}")

    def applies(self, record: Any, rng: np.random.Generator) -> bool:
        """Whether this study's sampling is translated this time (draws from rng only for
        contrast-enhanced studies)."""
        return bool(int(record.contrast)) and rng.random() < self.probability

    def describe(self) -> dict[str, Any]:
        """For model cards: where the generator came from and how it is applied."""
        return {"model_dir": self.source, "probability": self.probability,
                "generator_sha256": self.translator.card.get("weights_sha256", ""),
                "trained_on_site": self.translator.card.get("training", {}).get("site", "")}
