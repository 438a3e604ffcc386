"""The federation without processes or encryption, for sweeps: the same site learners, the
same fixed-point FedAvg bit for bit (`plaintext_fedavg`: the encrypted sum decrypts exactly to
the integer sum of the encodings), every site in every round, sites trained one after another
in one process with one torch thread each, as the trainer services run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ucadi.ct import PreprocessConfig
from ucadi.ct.synth import read_manifest
from ucadi.learn import StudyDataset, TrainingRecipe
from ucadi.learn.server_opt import FederatedOptimization
from ucadi.learn.site_learner import SiteLearner
from ucadi.lwe.codec import FixedPointCodec, plaintext_fedavg, site_weight
from ucadi.lwe.params import DEFAULT_PARAMETER_SET, get_parameters
from ucadi.model import get_preset
from ucadi.model.layout import initial_model
from ucadi.threads import set_compute_threads


@dataclass(frozen=True)
class FederationSetup:
    """One federated training run: who trains, how long, and how it learns."""

    manifest: Path
    sites: tuple[str, ...]
    rounds: int
    local_epochs: int = 1
    arch: str = "densenet3d"
    preset: str = "cpu-small"
    task: str = "binary"
    init_seed: int = 0
    site_seed: int = 0
    recipe: dict[str, Any] = field(default_factory=dict)
    optimization: FederatedOptimization = field(default_factory=FederatedOptimization)
    parameter_set: str = DEFAULT_PARAMETER_SET
    # Training samples per FedAvg weight unit (the aggregator's JoinResponse.weight_unit).
    weight_unit: int = 1
    # (site, CycleGAN folder) of sites that translate their contrast studies in training
    # (a trainer's site.augment_contrast), and the chance of a translation per sampling.
    augment_contrast: tuple[tuple[str, str], ...] = ()
    augment_contrast_probability: float = 0.5

    @property
    def training_recipe(self) -> TrainingRecipe:
        """The sites' recipe, its schedule spanning the whole federation."""
        return TrainingRecipe.from_dict({"task": self.task, **self.recipe})

    @property
    def preprocess(self) -> PreprocessConfig:
        """The preset's input pipeline."""
        preset = get_preset(self.preset)
        return PreprocessConfig(slices=preset.slices, size=(preset.height, preset.width))


@dataclass
class SimulationResult:
    """The learners at the end, and what each round cost."""

    learners: dict[str, SiteLearner]
    round_seconds: list[float]
    curve: list[dict[str, float]]

    @property
    def global_vector(self) -> np.ndarray:
        """The final global model (identical at every site)."""
        return next(iter(self.learners.values())).global_vector


def make_learners(setup: FederationSetup, device: str = "cpu") -> dict[str, SiteLearner]:
    """One learner per site, each from the federation's version 0."""
    records = read_manifest(setup.manifest)
    recipe = setup.training_recipe
    augmenting = dict(setup.augment_contrast)
    learners = {}
    for site in setup.sites:
        train = [r for r in records if r.site == site and r.split == "train"]
        augment = None
        if site in augmenting:
            from ucadi.augment import ContrastAugmentation, load_translator

            augment = ContrastAugmentation(load_translator(Path(augmenting[site])),
                                           setup.augment_contrast_probability,
                                           augmenting[site])
        dataset = StudyDataset(train, setup.preprocess, recipe.task, train=True,
                               seed=setup.site_seed, contrast_augment=augment)
        model = initial_model(setup.arch, setup.preset, len(recipe.class_names),
                              setup.init_seed)
        learners[site] = SiteLearner(model, dataset, recipe, setup.optimization, device=device,
                                     seed=setup.site_seed)
    return learners


def simulate(setup: FederationSetup, *,
             on_round: Callable[[int, SimulationResult], dict[str, float] | None] | None = None,
             threads: int = 1) -> SimulationResult:
    """Run every round in-process; `on_round(r, result)` may return curve metrics."""
    restore = set_compute_threads(threads)
    try:
        return _rounds(setup, on_round)
    finally:
        restore()


def _rounds(setup: FederationSetup,
            on_round: Callable[[int, SimulationResult], dict[str, float] | None] | None
            ) -> SimulationResult:
    params = get_parameters(setup.parameter_set)
    codec = FixedPointCodec.for_parameters(params)
    result = SimulationResult(make_learners(setup), [], [])
    for round_number in range(1, setup.rounds + 1):
        started = time.perf_counter()
        vectors, weights = [], []
        for learner in result.learners.values():
            update = learner.fit((round_number - 1) * setup.local_epochs, setup.local_epochs)
            vectors.append(learner.upload_vector(update))
            weights.append(site_weight(update.num_samples, setup.weight_unit))
        average = plaintext_fedavg(vectors, weights, codec, params)
        for learner in result.learners.values():
            learner.adopt(average, round_number)
        result.round_seconds.append(time.perf_counter() - started)
        if on_round is not None:
            point = on_round(round_number, result)
            if point is not None:
                result.curve.append({"round": round_number, **point})
    return result

