"""Another operating point on a finished experiment: every model's thresholds re-chosen on its
saved validation scores, and its sensitivities and specificities recomputed on its saved test
and hold-out scores (the per-CT scores `arms.per_ct_scores` writes into the JSON), without
retraining or re-reading a CT. AUCs need no threshold and come out as they were.

With Youden's J the recomputed metrics equal the run's own bit for bit (tested): the same
float64 validation and float32 test probabilities go through the same functions
(validation_threshold, evaluate_binary, summarise).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ucadi.demo.compare import validation_threshold
from ucadi.errors import UcadiError
from ucadi.experiments.arms import LOCAL_ONLY, ArmResult, summarise
from ucadi.learn.evaluate import OperatingPoint, evaluate_binary

# Settings that must agree between runs combined into one report.
SAME_SETTINGS = ("study", "cohort", "budget", "central_budget", "preset", "lr", "batch_size",
                 "warmup_epochs", "plaintext_simulation")


class RescoreError(UcadiError):
    """A run cannot be re-scored (no saved scores, or runs that do not belong together)."""


def rescore_scores(scores: dict[str, Any],
                   operating_point: OperatingPoint) -> tuple[dict[str, float], float]:
    """(summarise's metrics, the threshold) of one model's saved per-CT scores."""
    validation = scores["validation"]
    threshold = validation_threshold(validation["covid"], validation["labels"], operating_point)
    by_set = {name: evaluate_binary(np.asarray(block["covid"], dtype=np.float32),
                                    np.asarray(block["labels"]), threshold)
              for name, block in scores["sets"].items()}
    return summarise(by_set), threshold


def rescore_result(result: ArmResult, operating_point: OperatingPoint) -> ArmResult:
    """`result` with its threshold-dependent metrics recomputed at `operating_point` (other
    metrics, e.g. seconds and bytes, kept); the thresholds go to extra["thresholds"]."""
    metrics = dict(result.metrics)
    extra = {**result.extra, "operating_point": str(operating_point)}
    if result.arm == LOCAL_ONLY:
        per_site_scores = _scores(result, "per_site_scores")
        per_site, thresholds = {}, {}
        for site, scores in per_site_scores.items():
            per_site[site], thresholds[site] = rescore_scores(scores, operating_point)
        metrics.update({key: float(np.mean([m[key] for m in per_site.values()]))
                        for key in next(iter(per_site.values()))})
        metrics["best_local_pooled_auc"] = max(m["pooled_auc"] for m in per_site.values())
        extra.update(per_site=per_site, thresholds=thresholds)
    else:
        updated, threshold = rescore_scores(_scores(result, "scores"), operating_point)
        metrics.update(updated, threshold=threshold)
    return replace(result, metrics=metrics, extra=extra)


def _scores(result: ArmResult, key: str) -> Any:
    if key not in result.extra:
        raise RescoreError(f"run '{result.arm}' on seed {result.seed} has no per-CT scores "
                           f"(extra.{key}): runs before the scores were saved cannot be "
                           "re-scored; rerun the experiment")
    return result.extra[key]


def read_experiment(path: Path, error: type[UcadiError] = RescoreError) -> dict[str, Any]:
    """An experiment's JSON (its settings and runs); `error` names a file that is not one."""
    try:
        data = json.loads(Path(path).read_text())
        data["settings"], data["runs"]
    except (OSError, ValueError, KeyError, TypeError) as problem:
        raise error(f"{path} is not an experiment's JSON (settings and runs): "
                    f"{problem}") from None
    return data


def load_runs(paths: Sequence[Path]) -> tuple[dict[str, Any], list[ArmResult]]:
    """The settings and runs of one or more experiment JSONs (e.g. one per seed), as one
    experiment: their settings must agree (SAME_SETTINGS) and no (arm, seed) may repeat."""
    settings: dict[str, Any] = {}
    results: list[ArmResult] = []
    for path in paths:
        data = read_experiment(path)
        these, runs = data["settings"], data["runs"]
        if settings:
            differ = [k for k in SAME_SETTINGS if these.get(k) != settings.get(k)]
            if differ:
                raise RescoreError(f"{path} was run with other settings than {paths[0]} "
                                   f"({', '.join(differ)}); only runs of one configuration "
                                   "are re-scored together")
        else:
            settings = dict(these)
        for run in runs:
            result = ArmResult(run["arm"], run["seed"], run["metrics"], run.get("curve", []),
                               run.get("extra", {}))
            if any((r.arm, r.seed) == (result.arm, result.seed) for r in results):
                raise RescoreError(f"{path}: arm '{result.arm}' on seed {result.seed} appears "
                                   "in more than one run")
            results.append(result)
    settings["seeds"] = list(dict.fromkeys(r.seed for r in results))
    settings["rescored_from"] = [str(p) for p in paths]
    return settings, results
