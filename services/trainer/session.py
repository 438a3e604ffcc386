"""What a site holds once it joined a federation (`SiteSession`), and what the aggregator
announces of each round (`RoundAnnouncement`): the agent's loop reads these, not wire types."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ucadi.ct import PreprocessConfig
from ucadi.errors import UcadiError
from ucadi.learn import StudyDataset, TrainingRecipe
from ucadi.learn.evaluate import ORDINAL_TASKS
from ucadi.learn.server_opt import FederatedOptimization, announced_optimization
from ucadi.learn.site_learner import LocalLearner, SiteLearner
from ucadi.model import get_preset
from ucadi.model.layout import initial_model
from ucadi.v1 import federation_pb2


@dataclass(frozen=True)
class RoundAnnouncement:
    """The current round as the aggregator announces it (RoundInfo)."""

    round: int
    completed: bool  # the federation published its last version
    base_version: int  # the global version this round trains from
    latest_version: int  # the newest published global version
    awaiting_caller: bool  # the round is collecting and expects this site
    start_epoch: int  # global epochs done before this round (the LR schedule's position)
    local_epochs: int
    expected_sites: tuple[str, ...]
    min_sites: int
    optimizer_digest: str  # "" from an aggregator that does not announce one
    # Pairwise masks: the round awaits unmasking answers from `survivors`.
    unmasking: bool = False
    survivors: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()

    @classmethod
    def from_round_info(cls, info: Any) -> RoundAnnouncement:
        """From a federation_pb2.RoundInfo."""
        return cls(round=info.round, completed=info.state == federation_pb2.ROUND_STATE_COMPLETED,
                   base_version=info.base_version, latest_version=info.latest_version,
                   awaiting_caller=info.awaiting_caller, start_epoch=info.start_epoch,
                   local_epochs=info.local_epochs, expected_sites=tuple(info.expected_sites),
                   min_sites=info.min_sites, optimizer_digest=info.optimizer_digest,
                   unmasking=info.state == federation_pb2.ROUND_STATE_UNMASKING,
                   survivors=tuple(info.unmasking_survivors),
                   dropped=tuple(info.unmasking_dropped))


@dataclass
class SiteSession:
    """A site's membership of one federation, made at join from what the federation announced:
    the model and recipe, the server optimisation, the learner and the validation studies."""

    federation_id: str
    spec: Any  # federation_pb2.ModelSpec: published with every version's model card
    recipe: TrainingRecipe
    preprocess: PreprocessConfig
    optimization: FederatedOptimization
    learner: LocalLearner
    val_set: StudyDataset
    local_epochs: int
    weight_unit: int  # training samples per unit of FedAvg weight (JoinResponse.weight_unit)
    train_cases: int  # the site's training studies the federation's task can use

    @classmethod
    def from_join(cls, joined: Any, train_records: list[Any], val_records: list[Any], *,
                  device: str, seed: int, contrast_augment: Any = None) -> SiteSession:
        """Build the session from a federation_pb2.JoinResponse and the site's own studies;
        refuses a model layout other than the federation's."""
        spec = joined.model
        recipe = TrainingRecipe.from_dict(json.loads(spec.recipe_json))
        preset = get_preset(spec.preset)
        preprocess = PreprocessConfig(slices=preset.slices, size=(preset.height, preset.width))
        model = initial_model(spec.arch, spec.preset, len(recipe.class_names), spec.init_seed)
        optimization = announced_optimization(spec.optimizer_json)
        dataset = StudyDataset(train_records, preprocess, recipe.task, train=True, seed=seed,
                               contrast_augment=contrast_augment)
        # One learner for the site's whole run: the global model and the server optimiser's
        # state (identical at every site), and SGD momentum that carries over between rounds
        # (site-local; on the small synthetic cohort, pooled-test AUC 0.78 instead of 0.55
        # when momentum restarts every round).
        learner = SiteLearner(model, dataset, recipe, optimization, device=device, seed=seed)
        if learner.layout.hash != spec.layout_hash:
            raise UcadiError(f"this site's model layout {learner.layout.hash[:12]} differs from "
                             f"the federation's {spec.layout_hash[:12]}: update the site "
                             "software")
        # Validation stacks are read once and kept, like the training set's. COVID-19 tasks
        # validate COVID-19 vs the rest on every validation study (the UK-style site's binary
        # labels included); severity validates the grades of the graded COVID-19 studies.
        val_task = recipe.task if recipe.task in ORDINAL_TASKS else "binary"
        val_set = StudyDataset(val_records, preprocess, val_task, train=False, seed=seed)
        return cls(joined.federation_id, spec, recipe, preprocess, optimization, learner,
                   val_set, joined.local_epochs, joined.weight_unit or 1, len(dataset))
