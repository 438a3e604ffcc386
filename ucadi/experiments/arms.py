"""Experiment arms: a federated configuration, local-only models or the pooled (centralised)
model, trained on one cohort and evaluated the same way as the demo's comparison.

Every arm of an experiment gets the same budget of local epochs (a federated arm spends it as
rounds x local epochs); thresholds come from validation data, metrics from the pooled test set
and the COVID-only hold-out sites (5 samplings per CT).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ucadi.ct.synth import read_manifest
from ucadi.demo.compare import (
    CENTRALISED_WEIGHT_DECAY,
    HOLDOUT_SITES,
    POOLED,
    ModelScores,
    StackCache,
    evaluate_model,
    result_from_scores,
    score_model,
    train_baseline,
)
from ucadi.experiments.simulate import FederationSetup, SimulationResult, simulate
from ucadi.learn.recipe import COVID_CLASS
from ucadi.learn.server_opt import FederatedOptimization
from ucadi.model.layout import initial_model

LOCAL_ONLY = "local-only"
CENTRALISED = "centralised"
GOAL_FEDERATED = "federated (demo)"
FEDERATED = "federated"


@dataclass(frozen=True)
class Arm:
    """One configuration to train and evaluate."""

    name: str
    kind: str = FEDERATED
    local_epochs: int = 1
    optimization: FederatedOptimization = field(default_factory=FederatedOptimization)
    recipe: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for tables."""
        if self.kind != FEDERATED:
            return self.kind
        return f"E={self.local_epochs}, {self.optimization.describe()}"


@dataclass
class ArmResult:
    """An arm's metrics on one seed."""

    arm: str
    seed: int
    metrics: dict[str, float]
    curve: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Cohort:
    """A generated cohort's splits, and one cache of windowed stacks for every evaluation."""

    manifest: Path
    sites: tuple[str, ...]
    records: list[Any]
    cache: StackCache | None = None

    @classmethod
    def load(cls, manifest: Path, sites: tuple[str, ...]) -> Cohort:
        """Read the manifest."""
        return cls(manifest, sites, read_manifest(manifest))

    def split(self, sites: tuple[str, ...] | list[str], name: str) -> list[Any]:
        """Records of `sites` in split `name`."""
        return [r for r in self.records if r.site in sites and r.split == name]

    def test_sets(self) -> dict[str, list[Any]]:
        """Pooled test set and each hold-out site."""
        sets = {POOLED: self.split(self.sites, "test")}
        for site in HOLDOUT_SITES:
            sets[f"{site} (hold-out)"] = self.split([site], "holdout")
        return {k: v for k, v in sets.items() if v}


def summarise(by_set: dict[str, dict[str, float]]) -> dict[str, float]:
    """The figures experiments compare: pooled AUC (CI), sens/spec, mean hold-out sensitivity."""
    pooled = by_set[POOLED]
    holdouts = [m["sensitivity"] for name, m in by_set.items() if name.endswith("(hold-out)")]
    return {"pooled_auc": pooled["auc"], "pooled_auc_ci_low": pooled["auc_ci_low"],
            "pooled_auc_ci_high": pooled["auc_ci_high"],
            "pooled_sensitivity": pooled["sensitivity"],
            "pooled_specificity": pooled["specificity"],
            "holdout_sensitivity": float(np.mean(holdouts)) if holdouts else float("nan"),
            **{f"sensitivity {name}": m["sensitivity"] for name, m in by_set.items()
               if name.endswith("(hold-out)")}}


def evaluate_global(name: str, model: Any, cohort: Cohort, setup: FederationSetup,
                    seed: int) -> dict[str, float]:
    """Threshold on the pooled validation split, metrics on the pooled test and hold-outs."""
    return evaluate_global_scored(name, model, cohort, setup, seed)[0]


def evaluate_global_scored(name: str, model: Any, cohort: Cohort, setup: FederationSetup,
                           seed: int) -> tuple[dict[str, float], dict[str, Any]]:
    """evaluate_global's metrics and the per-CT scores they come from (`per_ct_scores`)."""
    return evaluate_scored(name, model, cohort, cohort.split(cohort.sites, "val"), setup, seed)


def evaluate_scored(name: str, model: Any, cohort: Cohort, val_records: list[Any],
                    setup: FederationSetup, seed: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Threshold on `val_records`, metrics on the pooled test and hold-outs (summarise), and
    the per-CT scores behind them, so another operating point can be applied later."""
    if cohort.cache is None:
        cohort.cache = StackCache(setup.preprocess)
    test_sets = cohort.test_sets()
    scores = score_model(model, val_records, test_sets, setup.preprocess, cohort.cache,
                         seed=seed)
    result = result_from_scores(name, scores, val_records, test_sets)
    return summarise(result.by_set), per_ct_scores(scores, val_records, test_sets)


def per_ct_scores(scores: ModelScores, val_records: list[Any],
                  test_sets: dict[str, list[Any]]) -> dict[str, Any]:
    """The COVID-19 probability and binary label of every validation CT (one sampling, what
    the threshold is chosen on) and of every CT of each test set (the 5-sampling average, as
    float32 as the metrics use it), by set: {"validation": {...}, "sets": {name: {...}}}, each
    {"case_ids", "labels", "covid"} in the records' order."""
    def block(records: list[Any], covid: list[float]) -> dict[str, list[Any]]:
        return {"case_ids": [r.case_id for r in records],
                "labels": [int(r.binary_label) for r in records], "covid": covid}

    def covid(records: list[Any]) -> list[float]:
        return [float(np.float32(scores.test[r.case_id][COVID_CLASS])) for r in records]

    val = [float(row[COVID_CLASS]) for row in scores.val]
    return {"validation": block(val_records if val else [], val),
            "sets": {name: block(records, covid(records))
                     for name, records in test_sets.items() if records}}


def _quick_auc(model: Any, cohort: Cohort, setup: FederationSetup, seed: int) -> float:
    """Pooled-test AUC with one sampling per CT (for curves over rounds)."""
    from ucadi.learn import predict_probabilities
    from ucadi.learn.stats import auc_ci_delong

    assert cohort.cache is not None
    records = cohort.split(cohort.sites, "test")
    probs = predict_probabilities(model, records, setup.preprocess, samples=1, seed=seed,
                                  stack_of=cohort.cache.loader(records))
    labels = np.array([r.binary_label for r in records])
    return float(auc_ci_delong(probs[:, 1], labels)[0])


def arm_setup(arm: Arm, base: FederationSetup, epochs: int) -> FederationSetup:
    """The federation an arm runs within a budget of `epochs` local epochs per site."""
    if epochs % arm.local_epochs:
        raise ValueError(f"a budget of {epochs} epochs is not a whole number of rounds of "
                         f"{arm.local_epochs} local epochs ({arm.name})")
    recipe = {**base.recipe, **arm.recipe, "total_epochs": epochs}
    recipe["warmup_epochs"] = min(recipe.get("warmup_epochs", 1), epochs - 1)
    return replace(base, recipe=recipe, local_epochs=arm.local_epochs,
                   rounds=epochs // arm.local_epochs, optimization=arm.optimization)


def ciphertext_bytes(setup: FederationSetup) -> tuple[int, int]:
    """(bytes of one site's upload, bytes of the global version) for this model and number of
    sites, measured on real ciphertexts of zeros."""
    import tempfile

    from ucadi.lwe import generate_secret_key
    from ucadi.lwe.codec import FixedPointCodec
    from ucadi.lwe.integrity import encode_site_update
    from ucadi.lwe.stream import encrypt_to_file, sum_files
    from ucadi.model.layout import ParameterLayout

    model = initial_model(setup.arch, setup.preset, len(setup.training_recipe.class_names), 0)
    layout = ParameterLayout.of(model.state_dict())
    secret = generate_secret_key(setup.parameter_set)
    codec = FixedPointCodec.for_parameters(secret.params)
    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder) / f"{i}.lwe" for i in range(len(setup.sites))]
        for path in paths:
            encrypt_to_file(path, secret, encode_site_update(np.zeros(layout.value_count), 1,
                                                             codec, secret, 1, path.stem),
                            layout_hash=bytes.fromhex(layout.hash), round_number=1)
        sum_files(paths, Path(folder) / "sum.lwe")
        return paths[0].stat().st_size, (Path(folder) / "sum.lwe").stat().st_size


def run_arm(arm: Arm, cohort: Cohort, base: FederationSetup, epochs: int, seed: int, *,
            encrypted: bool, workdir: Path, curve: bool = False) -> ArmResult:
    """Train and evaluate one arm on one seed: federated arms encrypted through the real
    services, or in the plaintext simulation; baselines in-process."""
    setup = arm_setup(arm, base, epochs)
    if cohort.cache is None:
        cohort.cache = StackCache(setup.preprocess)
    if arm.kind == FEDERATED and encrypted:
        from ucadi.experiments.encrypted import run_encrypted

        return run_encrypted(arm, cohort, setup, seed, workdir / f"{arm.name}-seed{seed}")
    started = time.perf_counter()
    if arm.kind == FEDERATED:
        result = _simulated(arm, cohort, setup, seed, curve)
        upload, download = ciphertext_bytes(setup)
        result.metrics["bytes_up"] = float(upload * len(setup.sites) * setup.rounds)
        result.metrics["bytes_down"] = float(download * len(setup.sites) * setup.rounds)
    elif arm.kind == CENTRALISED:
        model = initial_model(setup.arch, setup.preset, 2, setup.init_seed)
        train_baseline(model, cohort.split(cohort.sites, "train"), setup.preprocess,
                       replace(setup.training_recipe, weight_decay=CENTRALISED_WEIGHT_DECAY),
                       epochs, setup.site_seed)
        metrics, scores = evaluate_global_scored(arm.name, model, cohort, setup, seed)
        result = ArmResult(arm.name, seed, metrics, extra={"scores": scores})
    else:
        result = _local_only(arm, cohort, setup, epochs, seed)
    result.metrics["seconds"] = time.perf_counter() - started
    return result


def _simulated(arm: Arm, cohort: Cohort, setup: FederationSetup, seed: int,
               curve: bool) -> ArmResult:
    def global_model(result: SimulationResult) -> Any:
        model = initial_model(setup.arch, setup.preset, 2, setup.init_seed)
        model.load_state_dict(next(iter(result.learners.values())).global_state(), strict=False)
        return model

    def point(round_number: int, result: SimulationResult) -> dict[str, float] | None:
        if not curve:
            return None
        return {"pooled_auc_1_sampling": _quick_auc(global_model(result), cohort, setup, seed)}

    result = simulate(setup, on_round=point)
    metrics, scores = evaluate_global_scored(arm.name, global_model(result), cohort, setup, seed)
    extra: dict[str, Any] = {"scores": scores}
    if setup.optimization.local_batchnorm:
        extra["site_models"] = _site_models(result, cohort, setup, seed)
        metrics["site_model_own_test_auc"] = float(np.nanmean(
            [m["own_test_auc"] for m in extra["site_models"].values()]))
    return ArmResult(arm.name, seed, metrics, result.curve, extra)


def _site_models(result: SimulationResult, cohort: Cohort, setup: FederationSetup,
                 seed: int) -> dict[str, dict[str, float]]:
    """FedBN: each site's own model (global weights, its own BatchNorm), as its inference
    service serves it, on its own test set (threshold from its own validation split)."""
    assert cohort.cache is not None
    measured = {}
    for site, learner in result.learners.items():
        model = initial_model(setup.arch, setup.preset, 2, setup.init_seed)
        model.load_state_dict(learner.layout.unflatten(learner.site_vector()), strict=False)
        own = evaluate_model(f"site {site}", model, cohort.split([site], "val"),
                             {site: cohort.split([site], "test")}, setup.preprocess,
                             cohort.cache, seed=seed)
        measured[site] = {"own_test_auc": own.by_set[site]["auc"],
                          "own_test_sensitivity": own.by_set[site]["sensitivity"]}
    return measured


def _local_only(arm: Arm, cohort: Cohort, setup: FederationSetup, epochs: int,
                seed: int) -> ArmResult:
    assert cohort.cache is not None
    per_site, per_site_scores = {}, {}
    for site in cohort.sites:
        model = initial_model(setup.arch, setup.preset, 2, setup.init_seed)
        train_baseline(model, cohort.split([site], "train"), setup.preprocess,
                       setup.training_recipe, epochs, setup.site_seed)
        per_site[site], per_site_scores[site] = evaluate_scored(
            f"local {site}", model, cohort, cohort.split([site], "val"), setup, seed)
    metrics = {key: float(np.mean([m[key] for m in per_site.values()]))
               for key in next(iter(per_site.values()))}
    metrics["best_local_pooled_auc"] = max(m["pooled_auc"] for m in per_site.values())
    return ArmResult(arm.name, seed, metrics, extra={"per_site": per_site,
                                                     "per_site_scores": per_site_scores})
