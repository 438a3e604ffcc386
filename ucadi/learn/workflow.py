"""Whole jobs built from the pieces: train (optionally k-fold) and evaluate a model folder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ucadi.ct import TEST_SAMPLINGS, PreprocessConfig
from ucadi.learn.data import StudyDataset
from ucadi.learn.evaluate import (
    ORDINAL_TASKS,
    choose_threshold,
    evaluate_binary,
    multiclass_report,
)
from ucadi.learn.predict import predict_probabilities
from ucadi.learn.recipe import COVID_CLASS, SEVERITY_HINT, RecipeError, TrainingRecipe
from ucadi.learn.session import fit, folds_by_patient
from ucadi.learn.stats import StatisticsError
from ucadi.model import ModelCard, build_model, get_preset, save_checkpoint
from ucadi.model.base import CTClassifier

# Used only when there is no validation data with both classes to choose a cut on.
DEFAULT_THRESHOLD = 0.5


def preprocess_for(preset: str) -> PreprocessConfig:
    """The preprocessing config matching a model preset's input size."""
    spec = get_preset(preset)
    return PreprocessConfig(slices=spec.slices, size=(spec.height, spec.width))


def resolve_device(device: str) -> str:
    """'auto' -> cuda when available, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _cases_digest(records: list[Any]) -> str:
    return hashlib.sha256("\n".join(sorted(r.case_id for r in records)).encode()).hexdigest()


def train_model(train_records: list[Any], val_records: list[Any], *, arch: str, preset: str,
                recipe: TrainingRecipe, out_dir: Path, seed: int = 0, device: str = "cpu",
                progress: bool = True,
                on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
                contrast_augment: Any = None,
                ) -> tuple[CTClassifier, ModelCard]:
    """Train (resuming if out_dir holds a matching interrupted run) and save the checkpoint.
    `contrast_augment`: a ucadi.augment.ContrastAugmentation for the training set."""
    config = preprocess_for(preset)
    train_set = StudyDataset(train_records, config, recipe.task, train=True, seed=seed,
                             contrast_augment=contrast_augment)
    if not len(train_set):
        raise RecipeError(f"none of the {len(train_records)} training cases is usable for task "
                          f"{recipe.task!r}{SEVERITY_HINT if recipe.task == 'severity' else ''}")
    val_set = StudyDataset(val_records, config, recipe.task, train=False, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch, preset, len(recipe.class_names))
    fingerprint = {"arch": arch, "preset": preset, "recipe": recipe.to_dict(), "seed": seed,
                   "train": _cases_digest(train_set.records), "val": _cases_digest(val_set.records)}
    if contrast_augment is not None:
        fingerprint["contrast_augmentation"] = contrast_augment.describe()
    result = fit(model, train_set, recipe, state_dir=out_dir, fingerprint=fingerprint, seed=seed,
                 device=device, val_set=val_set, progress=progress, on_epoch_end=on_epoch_end)
    metrics: dict[str, Any] = {"threshold": DEFAULT_THRESHOLD, "threshold_rule": "default 0.5"}
    if recipe.task in ORDINAL_TASKS:
        # Grades are called by the most probable one: no threshold to choose.
        metrics = {"threshold_rule": "most probable grade (no threshold)"}
        if len(val_set):
            probs = predict_probabilities(model, val_set.records, config,
                                          samples=TEST_SAMPLINGS, seed=seed, device=device,
                                          stack_of=val_set.stack)
            metrics["validation"] = multiclass_report(probs, val_set.labels, recipe.class_names,
                                                      ordinal=True, seed=seed)
    elif len(val_set):
        probs = predict_probabilities(model, val_set.records, config, samples=TEST_SAMPLINGS,
                                      seed=seed, device=device, stack_of=val_set.stack)
        labels = (val_set.labels == COVID_CLASS).astype(int)
        try:
            threshold = choose_threshold(probs[:, COVID_CLASS], labels)
            metrics = {"threshold": threshold,
                       "threshold_rule": "Youden's J on validation (5 samplings per CT)",
                       "validation": evaluate_binary(probs[:, COVID_CLASS], labels, threshold)}
        except StatisticsError:
            pass
    training = {"train": train_set.summary(), "validation": val_set.summary(),
                "recipe": recipe.to_dict(), "seed": seed, "device": device,
                "resumed_from_epoch": result.resumed_from_epoch, "history": result.history}
    card = ModelCard.for_model(model, list(recipe.class_names), config.to_dict(),
                               task=recipe.task, training=training, metrics=metrics)
    save_checkpoint(out_dir, model, card)
    return model, card


def validation_headline(metrics: dict[str, Any]) -> float:
    """The validation AUC of a trained model's card metrics: COVID-19 AUC, or the macro AUC
    of a severity model; NaN when there was none."""
    validation = metrics.get("validation", {})
    return float(validation.get("auc", validation.get("macro_auc", float("nan"))))


def cross_validate(records: list[Any], folds: int, *, arch: str, preset: str,
                   recipe: TrainingRecipe, out_dir: Path, seed: int = 0, device: str = "cpu",
                   progress: bool = True,
                   on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
                   ) -> tuple[CTClassifier, ModelCard]:
    """k-fold CV by patient; the fold model with the best validation AUC becomes out_dir's."""
    results = []
    for k, fold in enumerate(folds_by_patient(records, folds, seed)):
        held = set(fold)
        model, card = train_model([r for i, r in enumerate(records) if i not in held],
                                  [records[i] for i in fold], arch=arch, preset=preset,
                                  recipe=recipe, out_dir=Path(out_dir) / "folds" / f"fold-{k}",
                                  seed=seed, device=device, progress=progress,
                                  on_epoch_end=on_epoch_end)
        auc = validation_headline(card.metrics)
        results.append((k, auc, model, card))
    aucs = [auc for _, auc, _, _ in results]
    best_fold, _, best_model, best_card = max(results, key=lambda r: -1 if np.isnan(r[1]) else r[1])
    best_card.metrics["cross_validation"] = {
        "folds": folds, "val_auc_per_fold": aucs, "val_auc_mean": float(np.nanmean(aucs)),
        "val_auc_std": float(np.nanstd(aucs)), "chosen_fold": best_fold}
    save_checkpoint(out_dir, best_model, best_card)
    return best_model, best_card
