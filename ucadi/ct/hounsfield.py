"""Stored pixel values to Hounsfield units, and the lung window: the first steps of the pipeline."""

from __future__ import annotations

import numpy as np

# The papers clip every CT to this window before sampling and standardising.
LUNG_WINDOW_HU = (-1200.0, 600.0)
# Air by definition of the Hounsfield scale; padding and out-of-field pixels become air.
AIR_HU = -1000.0
# Reconstructions mark pixels outside the field of view with values far below air
# (-2000, -3024 HU are common); nothing physical in a patient is below this.
OUT_OF_FIELD_HU = -1500.0


def to_hounsfield(stored: np.ndarray, slope: float = 1.0, intercept: float = 0.0,
                  padding: tuple[float, float] | None = None) -> np.ndarray:
    """Apply RescaleSlope/Intercept; padding (a stored-value range) and out-of-field become air."""
    hu = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    if padding is not None:
        low, high = min(padding), max(padding)
        hu[(stored >= low) & (stored <= high)] = AIR_HU
    hu[hu < OUT_OF_FIELD_HU] = AIR_HU
    return hu


def lung_window(volume_hu: np.ndarray,
                window_hu: tuple[float, float] = LUNG_WINDOW_HU) -> np.ndarray:
    """Clip Hounsfield values to the lung window (float32)."""
    low, high = window_hu
    return np.clip(volume_hu, low, high).astype(np.float32, copy=False)
