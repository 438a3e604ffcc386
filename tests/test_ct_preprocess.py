"""The preprocessing pipeline: adaptive sampling, window, resize, z-score, one definition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ucadi.ct.loader as loader
from ucadi.ct import (
    CTInputError,
    PreprocessConfig,
    load_stack,
    preprocess_study,
    preprocess_volume,
    resize_slices,
    sample_slice_indices,
    sample_stack,
    sampling_plan,
)
from ucadi.ct.preprocess import MIN_SPAN_FRACTION
from ucadi.ct.synth.dicom_writer import identity_for, write_series
from ucadi.ct.synth.scanners import SCANNERS

CONFIG = PreprocessConfig(slices=16, size=(32, 32))


@pytest.mark.parametrize("num_slices", [40, 57, 123, 300])
def test_sampled_indices_are_sorted_in_range_and_span_the_series(num_slices: int) -> None:
    for seed in range(20):
        indices = sample_slice_indices(num_slices, 16, np.random.default_rng(seed))
        assert indices.shape == (16,)
        assert np.all(np.diff(indices) > 0)
        assert indices[0] >= 0 and indices[-1] < num_slices
        assert indices[-1] - indices[0] >= MIN_SPAN_FRACTION * (num_slices - 1) - (16 - 1)
        # Equal steps: the "scalable interval" of the papers.
        assert len(set(np.diff(indices).tolist())) == 1


def test_sampling_differs_between_seeds_and_repeats_for_one_seed() -> None:
    draws = {tuple(sample_slice_indices(200, 16, np.random.default_rng(s))) for s in range(10)}
    assert len(draws) > 5
    again = sample_slice_indices(200, 16, np.random.default_rng(4))
    np.testing.assert_array_equal(again, sample_slice_indices(200, 16, np.random.default_rng(4)))


def test_a_series_shorter_than_the_sample_repeats_slices_evenly() -> None:
    indices = sample_slice_indices(10, 16, np.random.default_rng(0))
    assert indices.shape == (16,) and indices[0] == 0 and indices[-1] == 9
    assert np.all(np.diff(indices) >= 0)


def test_preprocessed_volume_has_shape_dtype_and_unit_normalisation() -> None:
    volume = np.random.default_rng(0).uniform(-2000, 2000, (60, 48, 40)).astype(np.float32)
    tensor = preprocess_volume(volume, CONFIG, samples=5, seed=3)
    assert tensor.shape == (5, 16, 32, 32) and tensor.dtype == np.float32
    np.testing.assert_allclose(tensor.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(tensor.std(axis=(1, 2, 3)), 1, atol=1e-3)
    assert not np.array_equal(tensor[0], tensor[1])
    np.testing.assert_array_equal(tensor, preprocess_volume(volume, CONFIG, samples=5, seed=3))


def test_lung_window_clips_before_standardising() -> None:
    volume = np.full((40, 8, 8), -3000.0, dtype=np.float32)
    volume[:, :4] = 3000.0
    clipped = np.where(volume > 0, 600.0, -1200.0).astype(np.float32)
    np.testing.assert_allclose(preprocess_volume(volume, CONFIG, 1, 0),
                               preprocess_volume(clipped, CONFIG, 1, 0), atol=1e-6)


def test_resize_preserves_constant_images_and_linear_ramps() -> None:
    constant = np.full((2, 512, 512), -700.0, dtype=np.float32)
    np.testing.assert_allclose(resize_slices(constant, (128, 128)), -700.0, atol=1e-3)
    ramp = np.tile(np.arange(64, dtype=np.float32), (1, 64, 1))
    resized = resize_slices(ramp, (64, 32))[0]
    # Interior columns of a halved ramp sit at the mean of the two source pixels they cover.
    np.testing.assert_allclose(resized[10, 5:-5], np.arange(5, 27) * 2 + 0.5, atol=1e-3)


def test_config_round_trips_through_a_dict_and_rejects_bad_values() -> None:
    assert PreprocessConfig.from_dict(CONFIG.to_dict()) == CONFIG
    with pytest.raises(CTInputError, match="low < high"):
        PreprocessConfig(window_hu=(600.0, -1200.0))
    with pytest.raises(CTInputError, match="samples must be >= 1"):
        preprocess_volume(np.zeros((40, 8, 8), np.float32), CONFIG, samples=0)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("study") / "dicom"
    hu = np.random.default_rng(2).uniform(-1100, 700, (64, 48, 48)).astype(np.float32)
    write_series(folder, hu, SCANNERS["philips-ingenuity"], identity_for("s", "P", 0, "20200101"),
                 False, pixel_mm=8.0, slice_mm=5.0)
    return folder


def test_study_preprocessing_equals_sampling_the_cached_stack(study: Path) -> None:
    direct = preprocess_study(study, CONFIG, samples=5, seed=11)
    stack = load_stack(study, CONFIG)
    assert stack.shape == (64, 32, 32)
    np.testing.assert_allclose(direct, sample_stack(stack, CONFIG, samples=5, seed=11), atol=1e-5)
    volume = loader.load_study(study).volume_hu
    np.testing.assert_allclose(direct, preprocess_volume(volume, CONFIG, 5, 11), atol=1e-5)


def test_study_preprocessing_decodes_only_the_sampled_slices(
        study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    original = loader.decode_slice_hu

    def counting(source: loader.DicomSource) -> np.ndarray:
        decoded.append(str(source))
        return original(source)

    monkeypatch.setattr(loader, "decode_slice_hu", counting)
    preprocess_study(study, CONFIG, samples=1, seed=0)
    assert len(decoded) == 16 and len(set(decoded)) == 16


def test_cli_preprocess_writes_k_samplings(study: Path, tmp_path: Path) -> None:
    from ucadi.cli import main as ucadi_main

    out = tmp_path / "x.npy"
    assert ucadi_main(["ct", "preprocess", str(study), "--samples", "5", "--size", "32", "32",
                       "--out", str(out)]) == 0
    array = np.load(out)
    assert array.shape == (5, 16, 32, 32) and array.dtype == np.float32


def test_the_sampling_plan_selects_the_slices_the_model_input_holds() -> None:
    volume = np.broadcast_to(np.arange(60, dtype=np.float32)[:, None, None] * 10 - 900,
                             (60, 8, 8)).copy()
    plan = sampling_plan(60, CONFIG, samples=3, seed=9)
    tensor = preprocess_volume(volume, CONFIG, samples=3, seed=9)
    # Each slice is constant, so its standardised value orders like its index.
    for sampled, indices in zip(tensor, plan, strict=True):
        assert np.all(np.diff(sampled[:, 0, 0]) > 0)
        np.testing.assert_allclose(np.corrcoef(sampled[:, 0, 0], indices)[0, 1], 1.0, atol=1e-6)
