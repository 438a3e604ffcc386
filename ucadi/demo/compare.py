"""The papers' comparison: local-only models, the federated model and a centralised model,
each evaluated on every site's test set, the pooled test set and the hold-out sets.

Local and centralised baselines train in-process with the same recipe, the same number of
epochs and the same initial weights as the federation, so the only difference is who sees
which data. Thresholds are chosen on validation data (Youden's J): a local model on its own
site's validation split, the federated and centralised models on the pooled validation split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ucadi.ct import PreprocessConfig, load_stack
from ucadi.learn import (
    COVID_CLASS,
    StudyDataset,
    TrainingRecipe,
    choose_threshold,
    evaluate_binary,
    predict_probabilities,
    train_local,
)
from ucadi.learn.stats import roc_points

POOLED = "pooled test"
# SPEC §3: weight decay 1e-4 centralised, 5e-4 for federated clients (and local-only sites).
CENTRALISED_WEIGHT_DECAY = 1e-4
HOLDOUT_SITES = ("wuhan-union", "wuhan-tianyou")


@dataclass
class ModelResult:
    """One model's threshold and its metrics on each test set."""

    name: str
    threshold: float
    by_set: dict[str, dict[str, float]] = field(default_factory=dict)
    pooled_scores: np.ndarray | None = None


class StackCache:
    """Each study's windowed stack, loaded once and shared by every model's evaluation."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config
        self._stacks: dict[str, np.ndarray] = {}

    def loader(self, records: Sequence[Any]) -> Callable[[int], np.ndarray]:
        """stack_of(i) for predict_probabilities over `records`."""
        def stack_of(index: int) -> np.ndarray:
            record = records[index]
            if record.case_id not in self._stacks:
                self._stacks[record.case_id] = load_stack(record.series_dir, self.config)
            return self._stacks[record.case_id]
        return stack_of


def train_baseline(model: torch.nn.Module, records: Sequence[Any], config: PreprocessConfig,
                   recipe: TrainingRecipe, epochs: int, seed: int,
                   contrast_augment: Any = None) -> torch.nn.Module:
    """Train `model` in place for `epochs` epochs from epoch 0 (the recipe's full schedule);
    `contrast_augment`: a ucadi.augment.ContrastAugmentation of the training set."""
    dataset = StudyDataset(list(records), config, recipe.task, train=True, seed=seed,
                           contrast_augment=contrast_augment)
    train_local(model, dataset, recipe, start_epoch=0, epochs=epochs, seed=seed, progress=False)
    return model


@dataclass(frozen=True)
class ModelScores:
    """A model's COVID-19 scores: validation (one sampling per CT, for the threshold) and
    test (the `samples`-sampling average) by case id, each CT scored once however many test
    sets hold it (a site's test set is part of the pooled one)."""

    val: np.ndarray
    test: dict[str, float]


def _scores(model: torch.nn.Module, records: Sequence[Any], config: PreprocessConfig,
            cache: StackCache, samples: int, seed: int) -> np.ndarray:
    probs = predict_probabilities(model, records, config, samples=samples, seed=seed,
                                  stack_of=cache.loader(records))
    return probs[:, COVID_CLASS]


def score_model(model: torch.nn.Module, val_records: Sequence[Any],
                test_sets: dict[str, Sequence[Any]], config: PreprocessConfig,
                cache: StackCache, samples: int = 5, seed: int = 0) -> ModelScores:
    """Scores of every validation CT and of every distinct test CT. A CT's sampling depends on
    (seed, case id) only, so its score is the same in whichever set it is evaluated."""
    val_labels = np.array([r.binary_label for r in val_records])
    val = np.zeros(0)
    if 0 < val_labels.sum() < len(val_labels):
        val = _scores(model, val_records, config, cache, 1, seed)
    distinct = list({r.case_id: r for records in test_sets.values() for r in records}.values())
    test = _scores(model, distinct, config, cache, samples, seed) if distinct else []
    return ModelScores(val, {r.case_id: float(s) for r, s in zip(distinct, test, strict=True)})


def result_from_scores(name: str, scores: ModelScores, val_records: Sequence[Any],
                       test_sets: dict[str, Sequence[Any]]) -> ModelResult:
    """Threshold from the validation scores (Youden's J; 0.5 when validation has one class),
    then metrics on every test set."""
    threshold = 0.5
    if len(scores.val):
        threshold = choose_threshold(scores.val, np.array([r.binary_label for r in val_records]))
    result = ModelResult(name, threshold)
    for set_name, records in test_sets.items():
        if not records:
            continue
        set_scores = np.array([scores.test[r.case_id] for r in records], dtype=np.float32)
        labels = np.array([r.binary_label for r in records])
        result.by_set[set_name] = evaluate_binary(set_scores, labels, threshold)
        if set_name == POOLED:
            result.pooled_scores = set_scores
    return result


def evaluate_model(name: str, model: torch.nn.Module, val_records: Sequence[Any],
                   test_sets: dict[str, Sequence[Any]], config: PreprocessConfig,
                   cache: StackCache, samples: int = 5, seed: int = 0) -> ModelResult:
    """Threshold from `val_records`, then metrics on every test set (5-sampling average)."""
    scores = score_model(model, val_records, test_sets, config, cache, samples, seed)
    return result_from_scores(name, scores, val_records, test_sets)


@dataclass(frozen=True)
class BaselineJob:
    """One baseline to train and score: its name, training and validation records, recipe and
    epochs."""

    name: str
    records: tuple[Any, ...]
    recipe: TrainingRecipe
    epochs: int
    val_records: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ScoringSetup:
    """What every worker needs to build, train and score a model the same way."""

    config: PreprocessConfig
    arch: str
    preset: str
    num_classes: int
    init_seed: int
    seed: int
    test_sets: dict[str, tuple[Any, ...]]


# One cache of windowed stacks per worker process, shared by the jobs it runs.
_WORKER_CACHE: dict[PreprocessConfig, StackCache] = {}


def _worker_cache(config: PreprocessConfig) -> StackCache:
    return _WORKER_CACHE.setdefault(config, StackCache(config))


def _train_and_score(job: BaselineJob, setup: ScoringSetup
                     ) -> tuple[dict[str, torch.Tensor], ModelScores]:
    """Worker process: train a baseline in one thread (as the experiments and the trainer
    services train) from the federation's initial weights, then score it."""
    from ucadi.model.layout import initial_model

    torch.set_num_threads(1)
    model = initial_model(setup.arch, setup.preset, setup.num_classes, setup.init_seed)
    train_baseline(model, job.records, setup.config, job.recipe, job.epochs, setup.seed)
    scores = score_model(model, job.val_records, setup.test_sets, setup.config,
                         _worker_cache(setup.config), seed=setup.seed)
    return model.state_dict(), scores


def _score_state(state: dict[str, torch.Tensor], val_records: tuple[Any, ...],
                 setup: ScoringSetup) -> ModelScores:
    """Worker process: score a trained model given as its state dict."""
    from ucadi.model.layout import initial_model

    torch.set_num_threads(1)
    model = initial_model(setup.arch, setup.preset, setup.num_classes, setup.init_seed)
    model.load_state_dict(state)
    return score_model(model, val_records, setup.test_sets, setup.config,
                       _worker_cache(setup.config), seed=setup.seed)


class BaselinePool:
    """Baselines trained and scored in `workers` processes of one torch thread each, the
    longest first, while the caller goes on (the demo runs its federation meanwhile). Every
    model's weights and scores are those of running the jobs one by one in one thread."""

    def __init__(self, jobs: Sequence[BaselineJob], setup: ScoringSetup, *,
                 workers: int = 2) -> None:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        self.setup = setup
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
        ordered = sorted(jobs, key=lambda j: -len(j.records) * j.epochs)
        self._jobs = {self._pool.submit(_train_and_score, job, setup): job for job in ordered}

    def score(self, state: dict[str, torch.Tensor], val_records: Sequence[Any]) -> Any:
        """Queue the scoring of a model trained elsewhere; returns its future."""
        return self._pool.submit(_score_state, state, tuple(val_records), self.setup)

    def results(self) -> dict[str, tuple[torch.nn.Module, ModelScores]]:
        """Wait for every baseline: name -> (model, scores)."""
        from concurrent.futures import as_completed

        from ucadi.model.layout import initial_model

        done: dict[str, tuple[torch.nn.Module, ModelScores]] = {}
        for future in as_completed(self._jobs):
            state, scores = future.result()
            name = self._jobs[future].name
            model = initial_model(self.setup.arch, self.setup.preset, self.setup.num_classes,
                                  self.setup.init_seed)
            model.load_state_dict(state)
            done[name] = (model, scores)
            print(f"      {name} model trained and scored", flush=True)
        return done

    def close(self) -> None:
        """Stop the workers (cancelling what has not started)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BaselinePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def markdown_table(results: Sequence[ModelResult], set_names: Sequence[str]) -> str:
    """Sensitivity / specificity / AUC (95 % CI) per model and test set, as markdown."""
    lines = ["| model | threshold | " + " | ".join(set_names) + " |",
             "|---|---|" + "---|" * len(set_names)]
    for result in results:
        cells = []
        for set_name in set_names:
            m = result.by_set.get(set_name)
            if m is None:
                cells.append("–")
                continue
            auc = ("AUC n/a" if np.isnan(m["auc"]) else
                   f"AUC {m['auc']:.3f} ({m['auc_ci_low']:.2f}-{m['auc_ci_high']:.2f})")
            spec = "–" if np.isnan(m["specificity"]) else f"{m['specificity']:.3f}"
            cells.append(f"sens {m['sensitivity']:.3f} / spec {spec} / {auc}")
        lines.append(f"| {result.name} | {result.threshold:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(path: Any, results: Sequence[ModelResult], pooled_labels: np.ndarray,
                    set_names: Sequence[str]) -> None:
    """ROC curves on the pooled test set and AUC per test set, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (roc_axis, bar_axis) = plt.subplots(1, 2, figsize=(13, 5.5))
    for result in results:
        if result.pooled_scores is None or len(set(pooled_labels)) < 2:
            continue
        fpr, tpr = roc_points(result.pooled_scores, pooled_labels)
        auc = result.by_set[POOLED]["auc"]
        style = "-" if result.name in ("federated", "centralised") else ":"
        roc_axis.plot(fpr, tpr, style, label=f"{result.name} (AUC {auc:.3f})")
    roc_axis.plot([0, 1], [0, 1], color="grey", linewidth=0.5)
    roc_axis.set(xlabel="1 - specificity", ylabel="sensitivity",
                 title="COVID-19 vs non-COVID-19, pooled test set")
    roc_axis.legend(loc="lower right", fontsize=8)
    auc_sets = [s for s in set_names if any(
        not np.isnan(r.by_set.get(s, {}).get("auc", np.nan)) for r in results)]
    width = 0.8 / max(1, len(results))
    for i, result in enumerate(results):
        values = [result.by_set.get(s, {}).get("auc", np.nan) for s in auc_sets]
        bar_axis.bar(np.arange(len(auc_sets)) + i * width, values, width, label=result.name)
    bar_axis.set_xticks(np.arange(len(auc_sets)) + width * (len(results) - 1) / 2)
    bar_axis.set_xticklabels(auc_sets, rotation=30, ha="right", fontsize=8)
    bar_axis.set(ylim=(0, 1), ylabel="AUC", title="AUC by test set")
    bar_axis.axhline(0.5, color="grey", linewidth=0.5)
    bar_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
