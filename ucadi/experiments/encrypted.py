"""A federated arm run encrypted through the real services, as `make demo` runs them: crypto
service, aggregator and one trainer per site as processes on 127.0.0.1 with mutual TLS."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ucadi.demo.federation import FederationPlan, LocalFederation
from ucadi.experiments.arms import Arm, ArmResult, Cohort, evaluate_global_scored
from ucadi.experiments.simulate import FederationSetup
from ucadi.learn.site_learner import load_global_model


def federation_plan(setup: FederationSetup, root: Path) -> FederationPlan:
    """The LocalFederation plan that runs `setup` (every site in every round)."""
    return FederationPlan(root=root, manifest=setup.manifest, sites=list(setup.sites),
                          rounds=setup.rounds, local_epochs=setup.local_epochs,
                          min_sites=len(setup.sites), arch=setup.arch,
                          model_preset=setup.preset, task=setup.task,
                          init_seed=setup.init_seed, recipe=dict(setup.recipe),
                          optimizer=setup.optimization.to_dict(), site_seed=setup.site_seed,
                          parameter_set=setup.parameter_set, trainer_threads=1)


def run_encrypted(arm: Arm, cohort: Cohort, setup: FederationSetup, seed: int, root: Path,
                  timeout: float = 7200.0) -> ArmResult:
    """Run the arm's federation for real and evaluate its global model."""
    started = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    plan = federation_plan(setup, root)
    federation = LocalFederation(plan)
    summary = federation.run(timeout)
    model = load_global_model(federation.global_state(setup.sites[0]), setup.arch, setup.preset,
                              len(setup.training_recipe.class_names), setup.init_seed)
    metrics, scores = evaluate_global_scored(arm.name, model, cohort, setup, seed)
    rounds = summary["rounds"]
    metrics["bytes_up"] = float(sum(r["bytes_in"] for r in rounds))
    metrics["bytes_down"] = float(sum(r["global_bytes"] for r in rounds) * len(setup.sites))
    metrics["seconds"] = time.perf_counter() - started
    return ArmResult(arm.name, seed, metrics, extra={"rounds": rounds, "scores": scores})
