"""A resumable training run: checkpoint after every epoch, continue after an interruption.

The state file holds the weights, the SGD momentum buffers, the loss-scaler state, the number of
completed epochs and the history, plus a fingerprint of the run's settings. Running the same run
again loads it and continues at the next epoch; because every epoch's randomness is derived from
(seed, epoch) (see train.py), the result equals an uninterrupted run. A state file written by a
run with other settings is refused rather than silently mixed in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ucadi.errors import UcadiError
from ucadi.learn.data import StudyDataset
from ucadi.learn.evaluate import validation_auc
from ucadi.learn.predict import predict_probabilities
from ucadi.learn.recipe import TrainingRecipe
from ucadi.learn.train import epoch_seed, make_optimizer, make_scaler, train_epoch

STATE_FILE = "training-state.pt"


class ResumeError(UcadiError):
    """A saved training state cannot be continued with the settings given."""


@dataclass
class FitResult:
    """Outcome of a (possibly resumed) run."""

    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_epoch: int = 0


def fit(model: nn.Module, train_set: StudyDataset, recipe: TrainingRecipe, *,
        state_dir: Path, fingerprint: dict[str, Any], seed: int = 0, device: str = "cpu",
        val_set: StudyDataset | None = None, progress: bool = True,
        on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Train to recipe.total_epochs, saving state after each epoch and resuming from it."""
    state_path = Path(state_dir) / STATE_FILE
    optimizer = make_optimizer(model, recipe)
    scaler = make_scaler(device)
    model.to(device)
    result = FitResult()
    fingerprint_json = json.dumps(fingerprint, sort_keys=True)
    if state_path.is_file():
        saved = torch.load(state_path, map_location=device, weights_only=True)
        if saved["fingerprint"] != fingerprint_json:
            raise ResumeError(f"{state_path} belongs to a run with other settings; use another "
                              f"output folder, or delete the file to start over")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scaler is not None and saved["scaler"]:
            scaler.load_state_dict(saved["scaler"])
        result.history = json.loads(saved["history"])
        result.resumed_from_epoch = int(saved["epoch"])
    for epoch in range(result.resumed_from_epoch, recipe.total_epochs):
        metrics = train_epoch(model, train_set, recipe, optimizer, epoch, device=device,
                              seed=seed, scaler=scaler, progress=progress)
        if val_set is not None and len(val_set):
            metrics["val_auc"] = _validation_auc(model, val_set, seed, epoch, device)
        metrics["epoch"] = epoch + 1
        result.history.append(metrics)
        _save_state(state_path, model, optimizer, scaler, epoch + 1, result.history,
                    fingerprint_json)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
    return result


def _validation_auc(model: nn.Module, val_set: StudyDataset, seed: int, epoch: int,
                    device: str) -> float:
    # One sampling per study per epoch, as the papers validate.
    probs = predict_probabilities(model, val_set.records, val_set.config, samples=1,
                                  seed=epoch_seed(seed, epoch), device=device,
                                  stack_of=val_set.stack)
    return validation_auc(probs, val_set.labels, val_set.task)


def _save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler | None, epoch: int, history: list[dict[str, float]],
                fingerprint_json: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "epoch": epoch, "history": json.dumps(history, default=float),
                "fingerprint": fingerprint_json}, tmp)
    os.replace(tmp, path)


def completed_epochs(state_dir: Path) -> int:
    """Epochs a saved run in state_dir has completed (0 when none)."""
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def folds_by_patient(records: list[Any], k: int, seed: int) -> list[list[int]]:
    """k disjoint folds of record indices; a patient's CTs stay in one fold, classes spread."""
    if k < 2:
        raise UcadiError(f"cross-validation needs at least 2 folds; got {k}")
    patients: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        patients.setdefault(record.patient_id, []).append(i)
    if len(patients) < k:
        raise UcadiError(f"{len(patients)} patients cannot fill {k} folds")
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    # Deal each class's patients round-robin in random order: folds get similar class mixes.
    by_label: dict[str, list[str]] = {}
    for patient, members in patients.items():
        by_label.setdefault(str(records[members[0]].label), []).append(patient)
    position = 0
    for label in sorted(by_label):
        group = sorted(by_label[label])
        for patient in (group[i] for i in rng.permutation(len(group))):
            folds[position % k].extend(patients[patient])
            position += 1
    return [sorted(fold) for fold in folds]
