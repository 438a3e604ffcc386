"""The papers' training recipe as data, and its learning-rate schedule over global progress.

SGD momentum 0.9, batch 16, lr 0.01, linear warm-up from 0 over 5 epochs then cosine annealing
to 0 at the last epoch (SPEC §3). The schedule is a function of the GLOBAL epoch (a float), so a
federated run (one local epoch per round) and a centralised run follow the same curve.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ucadi.errors import UcadiError

FOUR_CLASS_NAMES = ("healthy", "covid", "other_viral", "bacterial")
BINARY_CLASS_NAMES = ("non_covid", "covid")
# The first paper's COVID-19 severity grades I/II/III (involved lung fraction), in order.
SEVERITY_CLASS_NAMES = ("severity_I", "severity_II", "severity_III")
COVID_CLASS = 1  # index of COVID-19 in the binary and four-class tasks (severity has none)
TASKS = ("binary", "four_class", "severity")
# What a severity task's cases need, for messages about a site or set without any.
SEVERITY_HINT = (" (severity uses COVID-19 cases with a grade 1-3 in the manifest's severity "
                 "column)")
TASK_CLASS_NAMES = {"binary": BINARY_CLASS_NAMES, "four_class": FOUR_CLASS_NAMES,
                    "severity": SEVERITY_CLASS_NAMES}

# Paper: weighted cross-entropy over healthy, COVID-19, other viral, bacterial.
PAPER_FOUR_CLASS_WEIGHTS = (0.2, 0.2, 0.4, 0.2)
# China trainval case counts per class (SPEC §2), used to project the weights onto two classes.
PAPER_TRAINVAL_COUNTS = (342, 405, 56, 292)


def binary_weights_from_paper() -> tuple[float, float]:
    """Binary (non-COVID, COVID) weights giving each class the loss mass the paper's did.

    Merging healthy, other viral and bacterial into one class, the per-case weight that keeps
    that class's total weight on the paper's cohort is sum(w_k n_k) / sum(n_k) over the merged
    classes: (0.2*342 + 0.4*56 + 0.2*292) / 690 = 0.216; COVID keeps 0.2.
    """
    merged = [k for k in range(4) if k != COVID_CLASS]
    mass = sum(PAPER_FOUR_CLASS_WEIGHTS[k] * PAPER_TRAINVAL_COUNTS[k] for k in merged)
    count = sum(PAPER_TRAINVAL_COUNTS[k] for k in merged)
    return (mass / count, PAPER_FOUR_CLASS_WEIGHTS[COVID_CLASS])


class RecipeError(UcadiError):
    """A training recipe value is out of range or unknown."""


def task_class_names(task: str) -> tuple[str, ...]:
    """Output class names of a task; RecipeError for an unknown one."""
    if task not in TASK_CLASS_NAMES:
        raise RecipeError(f"task {task!r} is unknown; choose one of {TASKS}")
    return TASK_CLASS_NAMES[task]


@dataclass(frozen=True)
class TrainingRecipe:
    """Optimiser, schedule and loss settings; defaults are the papers' (federated clients)."""

    lr: float = 0.01
    momentum: float = 0.9
    # 1e-4 centralised, 5e-4 federated clients (SPEC §3).
    weight_decay: float = 5e-4
    batch_size: int = 16
    warmup_epochs: int = 5
    total_epochs: int = 100
    task: str = "binary"
    class_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise RecipeError(f"task {self.task!r} is unknown; choose one of {TASKS}")
        if self.lr <= 0 or self.batch_size < 1 or self.total_epochs < 1:
            raise RecipeError("lr must be > 0, batch_size >= 1 and total_epochs >= 1 "
                              f"(got {self.lr}, {self.batch_size}, {self.total_epochs})")
        if not 0 <= self.warmup_epochs < self.total_epochs:
            raise RecipeError(f"warmup_epochs {self.warmup_epochs} must be in "
                              f"[0, total_epochs={self.total_epochs})")
        if self.class_weights is not None:
            object.__setattr__(self, "class_weights", tuple(map(float, self.class_weights)))
            if len(self.class_weights) != len(self.class_names):
                raise RecipeError(f"{len(self.class_weights)} class weights given; task "
                                  f"{self.task} has {len(self.class_names)} classes "
                                  f"{self.class_names}")

    @property
    def class_names(self) -> tuple[str, ...]:
        """Output classes of the task (COVID-19 at index 1 in the binary and four-class tasks)."""
        return TASK_CLASS_NAMES[self.task]

    @property
    def loss_weights(self) -> tuple[float, ...]:
        """Cross-entropy class weights: explicit, or the task default derived from the paper
        (the paper gives no severity weights: the grades weigh equally)."""
        if self.class_weights is not None:
            return self.class_weights
        if self.task == "binary":
            return binary_weights_from_paper()
        if self.task == "four_class":
            return PAPER_FOUR_CLASS_WEIGHTS
        return (1.0,) * len(SEVERITY_CLASS_NAMES)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy."""
        data = asdict(self)
        data["class_weights"] = None if self.class_weights is None else list(self.class_weights)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingRecipe:
        """Recipe from its JSON form; RecipeError names unknown fields."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecipeError(f"unknown recipe fields {unknown}; known: {sorted(known)}")
        values = dict(data)
        if values.get("class_weights") is not None:
            values["class_weights"] = tuple(values["class_weights"])
        return cls(**values)


def lr_at(recipe: TrainingRecipe, epoch: float) -> float:
    """Learning rate at global progress `epoch` (0 = start, total_epochs = end)."""
    progress = min(max(epoch, 0.0), float(recipe.total_epochs))
    if progress < recipe.warmup_epochs:
        return recipe.lr * progress / recipe.warmup_epochs
    span = recipe.total_epochs - recipe.warmup_epochs
    return 0.5 * recipe.lr * (1.0 + math.cos(math.pi * (progress - recipe.warmup_epochs) / span))
