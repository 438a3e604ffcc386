"""The papers' preprocessing pipeline, defined once and used by training, evaluation and serving.

Steps (each a small named function): to Hounsfield units (`hounsfield.to_hounsfield`), lung window,
adaptive sampling of 16 slices (random start, scalable interval spanning the series), in-plane
linear resize of each slice to the model size, z-score standardisation. Testing averages K
independent samplings (the papers use 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ucadi.ct.errors import CTInputError
from ucadi.ct.hounsfield import LUNG_WINDOW_HU, lung_window
from ucadi.ct.loader import open_study

# 16 slices per study (papers); a study becomes a (16, 128, 128) tensor.
SAMPLED_SLICES = 16
MODEL_SIZE_PX = (128, 128)
# Test-time augmentation: the papers average the predictions of 5 independent samplings.
TEST_SAMPLINGS = 5
# The sampled slices span at least this fraction of the series (the "scalable interval").
MIN_SPAN_FRACTION = 0.75
# Slices decoded per batch in load_stack, bounding memory for 512x512 studies.
DECODE_BATCH_SLICES = 32
# Guards z-score against a constant (blank) sample.
ZSCORE_EPSILON = 1e-6


@dataclass(frozen=True)
class PreprocessConfig:
    """How a study becomes a model input: slice count, in-plane size, HU window."""

    slices: int = SAMPLED_SLICES
    size: tuple[int, int] = MODEL_SIZE_PX
    window_hu: tuple[float, float] = LUNG_WINDOW_HU

    def __post_init__(self) -> None:
        if self.slices < 1 or min(self.size) < 1 or len(self.size) != 2:
            raise CTInputError(f"preprocess config needs slices >= 1 and a (height, width) size "
                               f"of positive ints; got slices={self.slices}, size={self.size}")
        if self.window_hu[0] >= self.window_hu[1]:
            raise CTInputError(
                f"HU window must be (low, high) with low < high; got {self.window_hu}")

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessConfig:
        """Inverse of to_dict (lists from JSON become tuples)."""
        return cls(slices=int(data.get("slices", SAMPLED_SLICES)),
                   size=tuple(int(v) for v in data.get("size", MODEL_SIZE_PX)),  # type: ignore[arg-type]
                   window_hu=tuple(float(v) for v in data.get("window_hu", LUNG_WINDOW_HU)))  # type: ignore[arg-type]


def sample_slice_indices(num_slices: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Adaptive sampling: `count` sorted indices, random start, interval spanning the series."""
    if num_slices < 1:
        raise CTInputError("cannot sample slices from an empty series")
    if num_slices < count:
        # Too short to give distinct slices: spread evenly, repeating some (no randomness left).
        return np.round(np.linspace(0, num_slices - 1, count)).astype(np.int64)
    if count == 1:
        return np.array([rng.integers(0, num_slices)], dtype=np.int64)
    widest = (num_slices - 1) // (count - 1)
    shortest_span = MIN_SPAN_FRACTION * (num_slices - 1)
    narrowest = max(1, min(widest, int(np.ceil(shortest_span / (count - 1)))))
    interval = int(rng.integers(narrowest, widest + 1))
    start = int(rng.integers(0, num_slices - (count - 1) * interval))
    return start + interval * np.arange(count, dtype=np.int64)


@lru_cache(maxsize=32)
def _linear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) weights of linear interpolation, widened to a triangle filter when shrinking."""
    scale = in_size / out_size
    support = max(scale, 1.0)  # antialias: 512 -> 32 would otherwise alias noise into the input
    centres = (np.arange(out_size) + 0.5) * scale - 0.5
    distance = np.abs(np.arange(in_size)[None, :] - centres[:, None]) / support
    weights = np.clip(1.0 - distance, 0.0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)


def resize_slices(slices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize each slice of (n, h, w) to (n, *size) by separable linear interpolation."""
    height, width = size
    rows = _linear_resize_matrix(slices.shape[1], height)
    columns = _linear_resize_matrix(slices.shape[2], width)
    return np.matmul(np.matmul(rows, slices.astype(np.float32, copy=False)), columns.T)


def zscore(samples: np.ndarray) -> np.ndarray:
    """Standardise each sampling (leading axis) to zero mean and unit variance."""
    flat = samples.reshape(samples.shape[0], -1).astype(np.float64)
    mean = flat.mean(axis=1)
    std = flat.std(axis=1)
    shape = (-1,) + (1,) * (samples.ndim - 1)
    scaled = (samples - mean.reshape(shape)) / (std.reshape(shape) + ZSCORE_EPSILON)
    return scaled.astype(np.float32)


def sampling_plan(num_slices: int, config: PreprocessConfig, samples: int,
                  seed: int | None) -> np.ndarray:
    """(samples, slices) slice indices every entry point draws for this seed (e.g. to sample a
    lesion mask exactly as the model input was sampled)."""
    if samples < 1:
        raise CTInputError(f"samples must be >= 1 (the papers use {TEST_SAMPLINGS} for testing); "
                           f"got {samples}")
    rng = np.random.default_rng(seed)
    return np.stack([sample_slice_indices(num_slices, config.slices, rng) for _ in range(samples)])


def window_and_resize(slices_hu: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Lung window then in-plane resize: the per-slice part of the pipeline."""
    return resize_slices(lung_window(slices_hu, config.window_hu), config.size)


def sample_stack(stack: np.ndarray, config: PreprocessConfig, samples: int = 1,
                 seed: int | None = None) -> np.ndarray:
    """(samples, slices, H, W) model inputs from a windowed, resized stack (see load_stack)."""
    plan = sampling_plan(stack.shape[0], config, samples, seed)
    return zscore(stack[plan])


def load_stack(path: str | Path | Sequence[str | Path], config: PreprocessConfig,
               series_uid: str | None = None) -> np.ndarray:
    """Every slice of a study, windowed and resized in-plane but not standardised (n, H, W)."""
    with open_study(path, series_uid) as study:
        total = study.num_slices
        batches = [window_and_resize(
                       study.read_slices_hu(range(i, min(i + DECODE_BATCH_SLICES, total))), config)
                   for i in range(0, total, DECODE_BATCH_SLICES)]
    return np.concatenate(batches)


def preprocess_volume(volume_hu: np.ndarray, config: PreprocessConfig, samples: int = 1,
                      seed: int | None = None) -> np.ndarray:
    """(samples, slices, H, W) model inputs from an in-memory HU volume (z, y, x)."""
    plan = sampling_plan(volume_hu.shape[0], config, samples, seed)
    needed, inverse = np.unique(plan, return_inverse=True)
    stack = window_and_resize(volume_hu[needed], config)
    return zscore(stack[inverse.reshape(plan.shape)])


def preprocess_study(path: str | Path | Sequence[str | Path], config: PreprocessConfig,
                     samples: int = 1, seed: int | None = None,
                     series_uid: str | None = None) -> np.ndarray:
    """(samples, slices, H, W) model inputs from a study, decoding only the sampled slices."""
    with open_study(path, series_uid) as study:
        plan = sampling_plan(study.num_slices, config, samples, seed)
        needed, inverse = np.unique(plan, return_inverse=True)
        stack = window_and_resize(study.read_slices_hu(needed.tolist()), config)
    return zscore(stack[inverse.reshape(plan.shape)])
