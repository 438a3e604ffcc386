"""Preprocessing speed: a 300-slice 512x512 study, ours (decode only sampled slices) vs naive.

The naive baseline is what a first implementation does: pydicom-read every file, stack, apply
rescale, window, resize every slice, then sample. Ours reads headers only, orders the series,
and decodes just the 16 (or 5 x 16) sampled slices. Goal: >= 4x faster for 1 sampling.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from scipy import ndimage

from ucadi.ct import PreprocessConfig, preprocess_study, sample_stack
from ucadi.ct.hounsfield import lung_window, to_hounsfield
from ucadi.ct.preprocess import resize_slices
from ucadi.ct.synth.dicom_writer import identity_for, write_series
from ucadi.ct.synth.phantom import build_chest
from ucadi.ct.synth.scanners import SCANNERS

STUDY_SLICES = 300
STUDY_MATRIX = 512
# The phantom is built at a quarter of the matrix and upsampled: the benchmark measures
# reading and preprocessing, not phantom generation.
PHANTOM_MATRIX = 128
GOAL_SPEEDUP = 4.0


def make_study(folder: Path) -> Path:
    """Write a 300-slice 512x512 synthetic chest CT series into folder."""
    scanner = SCANNERS["ge-discovery-750"]
    rng = np.random.default_rng(0)
    pixel_mm = scanner.fov_mm / STUDY_MATRIX
    chest = build_chest(STUDY_SLICES, PHANTOM_MATRIX, scanner.fov_mm / PHANTOM_MATRIX, 1.0,
                        False, rng)
    factor = STUDY_MATRIX / PHANTOM_MATRIX
    volume = np.stack([ndimage.zoom(s, factor, order=1) for s in chest.hu])
    volume += rng.normal(0, scanner.noise_hu, volume.shape).astype(np.float32)
    write_series(folder, volume, scanner, identity_for("bench", "BENCH", 0, "20200101"), False,
                 pixel_mm, 1.0)
    return folder


def naive_preprocess(folder: Path, config: PreprocessConfig, samples: int, seed: int) -> np.ndarray:
    """Baseline: decode every slice, then window, resize and sample."""
    slices = []
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        if "LOCALIZER" in list(ds.ImageType):
            continue
        padding = (ds.PixelPaddingValue,) * 2 if "PixelPaddingValue" in ds else None
        hu = to_hounsfield(ds.pixel_array, float(ds.RescaleSlope), float(ds.RescaleIntercept),
                           padding)
        slices.append((float(ds.ImagePositionPatient[2]), hu))
    slices.sort(key=lambda item: item[0])
    stack = resize_slices(lung_window(np.stack([s for _, s in slices]), config.window_hu),
                          config.size)
    return sample_stack(stack, config, samples, seed)


def _interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per variant, alternating variants so load changes hit all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def run(quick: bool) -> list[str]:
    """Time ours vs the naive baseline; return summary lines."""
    repeats = 3 if quick else 7
    config = PreprocessConfig()
    with tempfile.TemporaryDirectory(prefix="ucadi-bench-ct-") as tmp:
        folder = make_study(Path(tmp) / "study")
        print(f"study: {STUDY_SLICES} slices {STUDY_MATRIX}x{STUDY_MATRIX}, "
              f"{sum(p.stat().st_size for p in folder.iterdir()) / 1e6:.0f} MB; "
              f"median of {repeats} runs")
        # Warm the page cache so both sides read from memory.
        naive_preprocess(folder, config, 1, 0)
        medians = _interleaved_medians({
            "naive1": lambda: naive_preprocess(folder, config, 1, 0),
            "ours1": lambda: preprocess_study(folder, config, 1, 0),
            "naive5": lambda: naive_preprocess(folder, config, 5, 0),
            "ours5": lambda: preprocess_study(folder, config, 5, 0),
        }, repeats)
        baseline, one = medians["naive1"], medians["ours1"]
        baseline_five, five = medians["naive5"], medians["ours5"]
        same = np.allclose(naive_preprocess(folder, config, 5, 0),
                           preprocess_study(folder, config, 5, 0), atol=1e-5)
    print(f"naive  1 sampling : {baseline:.3f} s")
    print(f"ours   1 sampling : {one:.3f} s  ({baseline / one:.1f}x)")
    print(f"naive  5 samplings: {baseline_five:.3f} s")
    print(f"ours   5 samplings: {five:.3f} s  ({baseline_five / five:.1f}x)")
    print(f"identical output  : {same}")
    return [
        f"preprocess 1 sampling {one:.3f} s vs naive {baseline:.3f} s = {baseline / one:.1f}x "
        f"(goal >= {GOAL_SPEEDUP:.0f}x: {'met' if baseline / one >= GOAL_SPEEDUP else 'NOT met'})",
        f"preprocess 5 samplings {five:.3f} s vs naive {baseline_five:.3f} s = "
        f"{baseline_five / five:.1f}x; outputs identical: {same}",
    ]
