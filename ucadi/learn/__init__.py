"""Local training, evaluation statistics and explanations: the API the federated trainer calls."""

from ucadi.learn.data import StudyDataset, task_label
from ucadi.learn.evaluate import choose_threshold, clinical_report, evaluate_binary
from ucadi.learn.predict import predict_inputs, predict_probabilities
from ucadi.learn.recipe import (
    BINARY_CLASS_NAMES,
    COVID_CLASS,
    FOUR_CLASS_NAMES,
    RecipeError,
    TrainingRecipe,
    lr_at,
)
from ucadi.learn.train import LocalUpdate, train_local

__all__ = [
    "BINARY_CLASS_NAMES", "COVID_CLASS", "FOUR_CLASS_NAMES", "LocalUpdate", "RecipeError",
    "StudyDataset", "TrainingRecipe", "choose_threshold", "clinical_report", "evaluate_binary",
    "lr_at", "predict_inputs", "predict_probabilities", "task_label", "train_local",
]
