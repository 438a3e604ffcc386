"""The contrast -> non-contrast CycleGAN: network shapes, presets, training, HU range,
checkpoints, the training-time augmentation and the commands."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ucadi.augment import (
    ContrastAugmentation,
    ContrastTranslator,
    get_preset,
    load_translator,
    save_translator,
)
from ucadi.augment.networks import build_discriminator, build_generator
from ucadi.augment.presets import PRESETS, AugmentError
from ucadi.augment.training import SliceDomains, collect_slices, train_cyclegan
from ucadi.augment.translate import from_unit, to_unit
from ucadi.ct import LUNG_WINDOW_HU, PreprocessConfig, sample_stack, zscore
from ucadi.ct.preprocess import sampling_plan
from ucadi.ct.synth import read_manifest
from ucadi.learn import StudyDataset
from ucadi.learn.data import study_seed
from ucadi.model.errors import CheckpointError

# A preset small enough for unit tests: 16x16 slices, 4 channels, one residual block.
TINY = replace(PRESETS["cpu-small"], name="test", size=16, generator_width=4,
               residual_blocks=1, discriminator_width=4, discriminator_layers=2, batch_size=4,
               epochs=8, constant_epochs=4, lr=2e-3, pool_size=4, slices_per_study=4)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread, as the trainers and experiments run (small 2D convolutions crawl
    when several threads spin on a busy machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def two_domains(count: int = 16, size: int = 16, seed: int = 0) -> SliceDomains:
    """'Contrast' discs at 250 HU and 'non-contrast' discs at 40 HU in lung-like -800 HU."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    def disc(hu: float) -> np.ndarray:
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        image = np.full((size, size), -800.0) + rng.normal(0, 20, (size, size))
        image[(y - cy) ** 2 + (x - cx) ** 2 < (size / 4) ** 2] = hu
        return image
    return SliceDomains(np.stack([disc(250.0) for _ in range(count)]).astype(np.float32),
                        np.stack([disc(40.0) for _ in range(count)]).astype(np.float32))


def test_generator_keeps_the_slice_shape_and_the_patchgan_scores_patches() -> None:
    for preset in (TINY, get_preset("cpu-small")):
        batch = torch.zeros(3, 1, preset.size, preset.size)
        assert build_generator(preset)(batch).shape == batch.shape
        scores = build_discriminator(preset)(batch)
        assert scores.shape[:2] == (3, 1) and 1 < scores.shape[-1] < preset.size
    # The papers' 70x70 PatchGAN (3 strided layers) scores a 14x14 grid of a 128x128 slice.
    paper = get_preset("paper")
    assert build_discriminator(paper)(torch.zeros(1, 1, 128, 128)).shape == (1, 1, 14, 14)


def test_paper_preset_has_the_papers_settings_and_schedule() -> None:
    paper = get_preset("paper")
    assert (paper.batch_size, paper.epochs, paper.constant_epochs, paper.lr) == \
        (12, 200, 100, 2e-4)
    assert (paper.size, paper.generator_width, paper.residual_blocks) == (128, 64, 9)
    assert paper.lr_at(0) == paper.lr_at(99) == 2e-4
    decays = [paper.lr_at(e) for e in range(100, 200)]
    assert all(a > b for a, b in zip(decays, decays[1:], strict=False))
    assert 0 < decays[-1] < 2e-4 / 50  # linearly down to (almost) 0 at the last epoch
    with pytest.raises(AugmentError, match="unknown CycleGAN preset 'big'.*paper, cpu-small"):
        get_preset("big")
    with pytest.raises(AugmentError, match="multiple of 4"):
        replace(TINY, size=30)


def test_cycle_consistency_loss_decreases_on_a_tiny_run() -> None:
    epochs_seen = []
    result = train_cyclegan(two_domains(), TINY, LUNG_WINDOW_HU, seed=0,
                            on_epoch_end=lambda e, row: epochs_seen.append(e))
    cycle = [row["cycle"] for row in result.history]
    assert epochs_seen == list(range(TINY.epochs))
    assert cycle[-1] < 0.7 * cycle[0], cycle
    assert result.history[-1]["lr"] < result.history[0]["lr"]  # the decay phase ran


def test_translation_stays_in_the_hu_window_and_keeps_the_shape() -> None:
    torch.manual_seed(0)
    translator = ContrastTranslator(build_generator(TINY), TINY.size, LUNG_WINDOW_HU)
    rng = np.random.default_rng(0)
    slices = rng.uniform(-3000, 3000, (2, 5, 16, 16)).astype(np.float32)
    out = translator.translate(slices)
    assert out.shape == slices.shape and out.dtype == np.float32
    assert out.min() >= LUNG_WINDOW_HU[0] and out.max() <= LUNG_WINDOW_HU[1]
    inside = rng.uniform(*LUNG_WINDOW_HU, (4, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(from_unit(to_unit(inside, LUNG_WINDOW_HU), LUNG_WINDOW_HU),
                               inside, atol=1e-2)
    with pytest.raises(AugmentError, match="32x32 cannot be translated.*16x16"):
        translator.translate(np.zeros((1, 32, 32), np.float32))


def test_checkpoint_round_trip_and_refusals(tmp_path: Path) -> None:
    torch.manual_seed(1)
    generator = build_generator(TINY)
    card = save_translator(tmp_path / "gan", generator, TINY, LUNG_WINDOW_HU, {"site": "x"})
    assert (tmp_path / "gan" / "model.safetensors").is_file()
    loaded = load_translator(tmp_path / "gan")
    slices = np.linspace(-1200, 600, 2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16)
    expected = ContrastTranslator(generator, TINY.size, LUNG_WINDOW_HU).translate(slices)
    np.testing.assert_array_equal(loaded.translate(slices), expected)
    assert loaded.card["weights_sha256"] == card["weights_sha256"]
    weights = tmp_path / "gan" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="does not match its card"):
        load_translator(tmp_path / "gan")
    (tmp_path / "classifier").mkdir()
    (tmp_path / "classifier" / "card.json").write_text(json.dumps(
        {"format": "ucadi-model-card/1"}))
    with pytest.raises(CheckpointError, match="not a CycleGAN generator"):
        load_translator(tmp_path / "classifier")
    with pytest.raises(CheckpointError, match="card.json not found"):
        load_translator(tmp_path / "nowhere")


def test_collect_slices_splits_by_the_contrast_column(tiny_cohort: Path) -> None:
    records = [r for r in read_manifest(tiny_cohort)
               if r.site == "nccid-uk" and r.split == "train"]
    domains = collect_slices(records, replace(TINY, size=32), LUNG_WINDOW_HU)
    contrast = sum(int(r.contrast) for r in records)
    assert domains.studies == {"contrast": contrast, "non_contrast": len(records) - contrast}
    assert domains.contrast.shape == (4 * contrast, 32, 32)
    china = [r for r in read_manifest(tiny_cohort) if r.site == "main-campus"]
    with pytest.raises(AugmentError, match="no readable contrast-enhanced studies"):
        collect_slices(china, TINY, LUNG_WINDOW_HU)


def test_training_translates_contrast_studies_before_standardisation(tiny_cohort: Path) -> None:
    records = [r for r in read_manifest(tiny_cohort)
               if r.site == "nccid-uk" and r.split == "train"]
    assert {int(r.contrast) for r in records} == {0, 1}
    config = PreprocessConfig(slices=16, size=(32, 32))
    torch.manual_seed(2)
    translator = ContrastTranslator(build_generator(replace(TINY, size=32)), 32, LUNG_WINDOW_HU)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = StudyDataset(records, config, "binary", train=True, seed=3)
        augmented = StudyDataset(records, config, "binary", train=True, seed=3,
                                 contrast_augment=ContrastAugmentation(translator, 1.0, "g"))
    for index, record in enumerate(augmented.records):
        sample, label = augmented[index]
        reference, _ = plain[index]
        seed = study_seed(3, 0, record.case_id)
        stack = augmented.stack(index)
        if int(record.contrast):
            plan = sampling_plan(len(stack), config, 1, seed)
            expected = zscore(translator.translate(stack[plan]))
            flipped = np.random.default_rng(seed).random() < 0.5
            expected = expected[..., ::-1] if flipped else expected
            np.testing.assert_allclose(sample.numpy(), expected, atol=1e-5)
            assert not np.allclose(sample.numpy(), reference.numpy())
        else:
            np.testing.assert_array_equal(sample.numpy(), reference.numpy())
        assert np.isclose(sample.numpy().mean(), 0, atol=1e-4)
    assert augmented.translated_samples == sum(int(r.contrast) for r in records)
    described = augmented.summary()["contrast_augmentation"]
    assert described["probability"] == 1.0 and described["translated_samples"] > 0
    never = StudyDataset(records, config, "binary", train=True, seed=3,
                         contrast_augment=ContrastAugmentation(translator, 0.0, "g"))
    for index in range(len(never)):
        np.testing.assert_array_equal(never[index][0].numpy(), plain[index][0].numpy())
    with pytest.raises(AugmentError, match="trained on 32x32.*preprocesses to 48x48"):
        StudyDataset(records, PreprocessConfig(slices=16, size=(48, 48)), "binary", train=True,
                     seed=3, contrast_augment=ContrastAugmentation(translator))
    with pytest.raises(AugmentError, match=r"probability must be in \[0, 1\]"):
        ContrastAugmentation(translator, 1.5)
    # The untouched pipeline is what the plain dataset used.
    index = next(i for i, r in enumerate(plain.records) if not int(r.contrast))
    seed = study_seed(3, 0, plain.records[index].case_id)
    unflipped = sample_stack(plain.stack(index), config, 1, seed)
    assert plain[index][0].shape == unflipped.shape


def test_commands_train_apply_and_train_a_classifier_with_the_augmentation(
        tiny_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ucadi.cli import main

    data = str(tiny_cohort.parent)
    gan = tmp_path / "gan"
    assert main(["augment", "cyclegan", "train", "--data", data, "--site", "nccid-uk",
                 "--epochs", "1", "--threads", "1", "--out", str(gan)]) == 0
    card = json.loads((gan / "card.json").read_text())
    assert card["training"]["site"] == "nccid-uk" and card["preset"]["name"] == "cpu-small"
    assert (gan / "before-after.png").stat().st_size > 10_000
    assert "epoch 1/1" in capsys.readouterr().out
    assert main(["augment", "cyclegan", "train", "--data", data, "--out",
                 str(tmp_path / "x")]) == 2
    assert "name the one to use with --site" in capsys.readouterr().err

    applied = tmp_path / "applied"
    assert main(["augment", "cyclegan", "apply", "--model", str(gan), "--data", data,
                 "--site", "nccid-uk", "--limit", "1", "--out", str(applied)]) == 0
    summary = json.loads((applied / "summary.json").read_text())
    stack = np.load(applied / f"{summary['studies'][0]}.npy")
    assert stack.shape[1:] == (32, 32)
    assert LUNG_WINDOW_HU[0] <= stack.min() and stack.max() <= LUNG_WINDOW_HU[1]
    assert (applied / "before-after.png").is_file()

    model = tmp_path / "model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "--data", data, "--site", "nccid-uk", "--epochs", "1",
                     "--batch-size", "4", "--threads", "1", "--no-progress",
                     "--augment-contrast", str(gan), "--augment-contrast-probability", "1",
                     "--out", str(model)]) == 0
    trained = json.loads((model / "card.json").read_text())["training"]["train"]
    assert trained["contrast_augmentation"]["model_dir"] == str(gan)
    assert trained["contrast_augmentation"]["translated_samples"] > 0
    assert main(["train", "--data", data, "--site", "nccid-uk", "--epochs", "1",
                 "--augment-contrast", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "m2")]) == 1
    assert "card.json not found" in capsys.readouterr().err
