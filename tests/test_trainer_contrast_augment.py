"""A federated site uses the contrast augmentation: site.augment_contrast and its probability
in the trainer's config (errors name the setting) reach the site session's training set (the
chart's trainer.augmentContrast values: tests/test_deploy_values.py)."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from test_augment_cyclegan import one_thread  # noqa: F401 - autouse fixture

from services.trainer.server import DEFAULTS, contrast_augmentation
from services.trainer.session import SiteSession
from ucadi.augment import save_translator
from ucadi.augment.networks import build_generator
from ucadi.augment.presets import PRESETS
from ucadi.ct import LUNG_WINDOW_HU
from ucadi.ct.synth import read_manifest
from ucadi.errors import UcadiError
from ucadi.learn import TrainingRecipe
from ucadi.model.layout import ParameterLayout, initial_model
from ucadi.ops.config import load_config
from ucadi.v1 import federation_pb2

SMALL = replace(PRESETS["cpu-small"], generator_width=4, residual_blocks=1)




@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gan")
    torch.manual_seed(0)
    save_translator(folder, build_generator(SMALL), SMALL, LUNG_WINDOW_HU, {"site": "nccid-uk"})
    return folder


def site_config(tmp_path: Path, **site: Any) -> dict[str, Any]:
    path = tmp_path / "trainer.yaml"
    path.write_text(yaml.safe_dump({"site": site}))
    return load_config(DEFAULTS, path, environ={})["site"]


def test_trainer_config_turns_the_augmentation_on_and_names_bad_settings(
        tmp_path: Path, generator_dir: Path) -> None:
    assert contrast_augmentation(site_config(tmp_path)) is None  # off by default
    augment = contrast_augmentation(site_config(
        tmp_path, augment_contrast=str(generator_dir), augment_contrast_probability=0.25))
    assert augment.probability == 0.25 and augment.source == str(generator_dir)
    with pytest.raises(UcadiError, match=r"site.augment_contrast_probability must be a number "
                                         r"in \[0, 1\]; got 2"):
        contrast_augmentation(site_config(tmp_path, augment_contrast=str(generator_dir),
                                          augment_contrast_probability=2))
    with pytest.raises(UcadiError, match="site.augment_contrast: .*card.json not found"):
        contrast_augmentation(site_config(tmp_path, augment_contrast=str(tmp_path / "none")))


def test_site_session_trains_on_the_augmented_set(tiny_cohort: Path, generator_dir: Path,
                                                  tmp_path: Path) -> None:
    augment = contrast_augmentation(site_config(tmp_path, augment_contrast=str(generator_dir),
                                                augment_contrast_probability=1.0))
    model = initial_model("densenet3d", "cpu-small", 2, 0)
    recipe = TrainingRecipe.from_dict({"task": "binary", "total_epochs": 2, "warmup_epochs": 0})
    joined = federation_pb2.JoinResponse(
        federation_id="f", site="nccid-uk", local_epochs=1, weight_unit=1,
        model=federation_pb2.ModelSpec(
            arch="densenet3d", preset="cpu-small", task="binary", init_seed=0,
            recipe_json=json.dumps(recipe.to_dict()),
            layout_hash=ParameterLayout.of(model.state_dict()).hash))
    records = [r for r in read_manifest(tiny_cohort) if r.site == "nccid-uk"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = SiteSession.from_join(joined, [r for r in records if r.split == "train"],
                                        [r for r in records if r.split == "val"], device="cpu",
                                        seed=0, contrast_augment=augment)
    dataset = session.learner.dataset
    assert dataset.contrast_augment is augment
    update = session.learner.fit(0, 1)
    assert update.num_samples == len(dataset)
    assert dataset.translated_samples == sum(int(r.contrast) for r in dataset.records) > 0

