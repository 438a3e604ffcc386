"""The papers' comparison: local-only models, the federated model and a centralised model,
each evaluated on every site's test set, the pooled test set and the hold-out sets.

Local and centralised baselines train in-process with the same recipe, the same number of
epochs and the same initial weights as the federation, so the only difference is who sees
which data. Thresholds are chosen on validation data (Youden's J): a local model on its own
site's validation split, the federated and centralised models on the pooled validation split.
A four-class model adds the four-class outputs on the pooled test set; a severity model is
evaluated on each set's graded COVID-19 cases only (most probable grade, no threshold).
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
from ucadi.learn.data import usable_records
from ucadi.learn.evaluate import (
    ORDINAL_TASKS,
    YOUDEN,
    OperatingPoint,
    multiclass_report,
    task_truth,
)
from ucadi.learn.recipe import task_class_names
from ucadi.learn.stats import roc_points
from ucadi.threads import set_compute_threads

POOLED = "pooled test"
# SPEC §3: weight decay 1e-4 centralised, 5e-4 for federated clients (and local-only sites).
CENTRALISED_WEIGHT_DECAY = 1e-4
HOLDOUT_SITES = ("wuhan-union", "wuhan-tianyou")


@dataclass
class ModelResult:
    """One model's threshold and its metrics on each test set: COVID-19 vs the rest
    (evaluate_binary) for the COVID-19 tasks, the grades (multiclass_report) for severity,
    whose threshold is None. `classes`: a four-class model's four-class outputs on the
    pooled test set."""

    name: str
    threshold: float | None
    by_set: dict[str, dict[str, Any]] = field(default_factory=dict)
    pooled_scores: np.ndarray | None = None
    classes: dict[str, Any] | None = None


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
    """A model's class probabilities: validation (one sampling per CT, for the threshold) and
    test (the `samples`-sampling average) by case id, each CT scored once however many test
    sets hold it (a site's test set is part of the pooled one)."""

    val: np.ndarray
    test: dict[str, np.ndarray]


def _probabilities(model: torch.nn.Module, records: Sequence[Any], config: PreprocessConfig,
                   cache: StackCache, samples: int, seed: int) -> np.ndarray:
    return predict_probabilities(model, records, config, samples=samples, seed=seed,
                                 stack_of=cache.loader(records))


def score_model(model: torch.nn.Module, val_records: Sequence[Any],
                test_sets: dict[str, Sequence[Any]], config: PreprocessConfig,
                cache: StackCache, samples: int = 5, seed: int = 0,
                task: str = "binary") -> ModelScores:
    """Probabilities of every validation CT and of every distinct test CT the task can use
    (a severity model: graded COVID-19 CTs only, and no validation scores, as it has no
    threshold). A CT's sampling depends on (seed, case id) only, so its probabilities are
    the same in whichever set it is evaluated."""
    val_labels = np.array([r.binary_label for r in val_records])
    val = np.zeros((0, len(task_class_names(task))))
    if task not in ORDINAL_TASKS and 0 < val_labels.sum() < len(val_labels):
        val = _probabilities(model, val_records, config, cache, 1, seed)
    distinct = list({r.case_id: r for records in test_sets.values()
                     for r in _evaluated(records, task)}.values())
    test = _probabilities(model, distinct, config, cache, samples, seed) if distinct else []
    return ModelScores(val, {r.case_id: row for r, row in zip(distinct, test, strict=True)})


def _evaluated(records: Sequence[Any], task: str) -> list[Any]:
    """The CTs of a test set a model of `task` is evaluated on."""
    return usable_records(records, task) if task in ORDINAL_TASKS else list(records)


def result_from_scores(name: str, scores: ModelScores, val_records: Sequence[Any],
                       test_sets: dict[str, Sequence[Any]], task: str = "binary"
                       ) -> ModelResult:
    """COVID-19 tasks: threshold from the validation scores (Youden's J; 0.5 when validation
    has one class), then metrics on every test set (and a four-class model's four-class
    outputs on the pooled one). Severity: the grades on every set's graded CTs."""
    if task in ORDINAL_TASKS:
        return _grades_result(name, scores, test_sets, task)
    threshold = validation_threshold(scores.val[:, COVID_CLASS] if len(scores.val) else [],
                                     [r.binary_label for r in val_records])
    result = ModelResult(name, threshold)
    for set_name, records in test_sets.items():
        if not records:
            continue
        probs = np.array([scores.test[r.case_id] for r in records], dtype=np.float32)
        set_scores = probs[:, COVID_CLASS]
        labels = np.array([r.binary_label for r in records])
        result.by_set[set_name] = evaluate_binary(set_scores, labels, threshold)
        if set_name == POOLED:
            result.pooled_scores = set_scores
            if task == "four_class":
                rows, truth = task_truth(records, task)
                result.classes = multiclass_report(probs[rows], truth, task_class_names(task))
    return result


def validation_threshold(val_covid: Sequence[float] | np.ndarray, val_labels: Sequence[int],
                         operating_point: OperatingPoint = YOUDEN) -> float:
    """The threshold `operating_point` chooses on the validation CTs' COVID-19 probabilities;
    0.5 when there are none (validation with one class is not scored)."""
    if not len(val_covid):
        return 0.5
    return choose_threshold(np.asarray(val_covid), np.asarray(val_labels), operating_point)


def _grades_result(name: str, scores: ModelScores, test_sets: dict[str, Sequence[Any]],
                   task: str) -> ModelResult:
    result = ModelResult(name, None)
    for set_name, records in test_sets.items():
        graded = _evaluated(records, task)
        if not graded:
            continue
        probs = np.array([scores.test[r.case_id] for r in graded], dtype=np.float32)
        _, truth = task_truth(graded, task)
        result.by_set[set_name] = multiclass_report(probs, truth, task_class_names(task),
                                                    ordinal=True)
    return result


def evaluate_model(name: str, model: torch.nn.Module, val_records: Sequence[Any],
                   test_sets: dict[str, Sequence[Any]], config: PreprocessConfig,
                   cache: StackCache, samples: int = 5, seed: int = 0,
                   task: str = "binary") -> ModelResult:
    """Threshold from `val_records`, then metrics on every test set (5-sampling average)."""
    scores = score_model(model, val_records, test_sets, config, cache, samples, seed, task)
    return result_from_scores(name, scores, val_records, test_sets, task)


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
    task: str = "binary"


# One cache of windowed stacks per worker process, shared by the jobs it runs.
_WORKER_CACHE: dict[PreprocessConfig, StackCache] = {}


def _worker_cache(config: PreprocessConfig) -> StackCache:
    return _WORKER_CACHE.setdefault(config, StackCache(config))


def _train_and_score(job: BaselineJob, setup: ScoringSetup
                     ) -> tuple[dict[str, torch.Tensor], ModelScores]:
    """Worker process: train a baseline in one thread (as the experiments and the trainer
    services train) from the federation's initial weights, then score it."""
    from ucadi.model.layout import initial_model

    set_compute_threads(1)
    model = initial_model(setup.arch, setup.preset, setup.num_classes, setup.init_seed)
    train_baseline(model, job.records, setup.config, job.recipe, job.epochs, setup.seed)
    scores = score_model(model, job.val_records, setup.test_sets, setup.config,
                         _worker_cache(setup.config), seed=setup.seed, task=setup.task)
    return model.state_dict(), scores


def _score_state(state: dict[str, torch.Tensor], val_records: tuple[Any, ...],
                 setup: ScoringSetup) -> ModelScores:
    """Worker process: score a trained model given as its state dict."""
    from ucadi.model.layout import initial_model

    set_compute_threads(1)
    model = initial_model(setup.arch, setup.preset, setup.num_classes, setup.init_seed)
    model.load_state_dict(state)
    return score_model(model, val_records, setup.test_sets, setup.config,
                       _worker_cache(setup.config), seed=setup.seed, task=setup.task)


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


def _interval(block: dict[str, Any], key: str) -> str:
    if np.isnan(block.get(key, np.nan)):
        return "n/a"
    return f"{block[key]:.3f} ({block[f'{key}_ci_low']:.2f}-{block[f'{key}_ci_high']:.2f})"


def grades_table(results: Sequence[ModelResult], set_names: Sequence[str]) -> str:
    """Graded CTs, accuracy, macro AUC (95 % CI) and quadratic-weighted kappa per model and
    test set, as markdown."""
    lines = ["| model | " + " | ".join(set_names) + " |", "|---|" + "---|" * len(set_names)]
    for result in results:
        cells = []
        for set_name in set_names:
            m = result.by_set.get(set_name)
            if m is None or "confusion" not in m:
                cells.append("–")
                continue
            kappa = m["quadratic_kappa"]
            cells.append(f"n {m['cases']} / acc {m['accuracy']:.3f} / macro AUC "
                         f"{_interval(m, 'macro_auc')} / kappa "
                         f"{'n/a' if np.isnan(kappa) else f'{kappa:.3f}'}")
        lines.append(f"| {result.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def classes_table(results: Sequence[ModelResult]) -> str:
    """Four-class outputs on the pooled test set per model: accuracy, macro AUC (95 % CI) and
    each class's sensitivity / specificity, as markdown."""
    names = next((list(r.classes["class_names"]) for r in results if r.classes), [])
    lines = ["| model | CTs | accuracy | macro AUC (95 % CI) | "
             + " | ".join(f"{n} sens / spec" for n in names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for result in results:
        block = result.classes or {}
        if "confusion" not in block:
            continue
        rates = [block["per_class"][n] for n in names]
        lines.append(f"| {result.name} | {block['cases']} | {block['accuracy']:.3f} | "
                     f"{_interval(block, 'macro_auc')} | " + " | ".join(
                         "n/a" if np.isnan(r["sensitivity"]) else
                         f"{r['sensitivity']:.2f} / {r['specificity']:.2f}" for r in rates)
                     + " |")
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
    _bar_panel(bar_axis, results, set_names, "auc", "AUC", 0.5)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _bar_panel(axis: Any, results: Sequence[ModelResult], set_names: Sequence[str], key: str,
               label: str, chance: float) -> None:
    """`key` of every model on every test set where some model has it, as grouped bars."""
    sets = [s for s in set_names if any(
        not np.isnan(r.by_set.get(s, {}).get(key, np.nan)) for r in results)]
    width = 0.8 / max(1, len(results))
    lowest = 0.0  # a kappa below chance shows as a bar below 0
    for i, result in enumerate(results):
        values = [result.by_set.get(s, {}).get(key, np.nan) for s in sets]
        lowest = min([lowest, *(v for v in values if not np.isnan(v))])
        axis.bar(np.arange(len(sets)) + i * width, values, width, label=result.name)
    axis.set_xticks(np.arange(len(sets)) + width * (len(results) - 1) / 2)
    axis.set_xticklabels(sets, rotation=30, ha="right", fontsize=8)
    axis.set(ylim=(lowest, 1), ylabel=label, title=f"{label} by test set")
    axis.axhline(chance, color="grey", linewidth=0.5)
    axis.legend(fontsize=7)


def plot_grades(path: Any, results: Sequence[ModelResult], set_names: Sequence[str]) -> None:
    """A severity comparison: macro AUC and quadratic-weighted kappa per test set, side by
    side (chance: AUC 0.5, kappa 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (auc_axis, kappa_axis) = plt.subplots(1, 2, figsize=(13, 5.5))
    _bar_panel(auc_axis, results, set_names, "macro_auc", "macro AUC (grades)", 0.5)
    _bar_panel(kappa_axis, results, set_names, "quadratic_kappa", "quadratic-weighted kappa",
               0.0)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
