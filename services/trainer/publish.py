"""Publishing decrypted global versions into the site's model folder for its inference service.

Layout: MODEL_DIR/versions/<n>/{model.safetensors,card.json} and MODEL_DIR/current, a symlink
to the newest version switched atomically (rename over the old link), so an inference server
watching `current` never sees a half-written model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ucadi.ct import PreprocessConfig
from ucadi.learn import TrainingRecipe
from ucadi.learn.server_opt import FederatedOptimization
from ucadi.model import ModelCard, load_checkpoint, save_checkpoint

CURRENT_LINK = "current"
VERSIONS_DIR = "versions"


class ModelPublisher:
    """Writes global versions under a site's model folder and finds the newest one."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        (self.model_dir / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)

    def publish(self, model: torch.nn.Module, *, version: int, spec: Any,
                recipe: TrainingRecipe, preprocess: PreprocessConfig,
                metrics: dict[str, float], train_cases: int,
                optimization: FederatedOptimization | None = None) -> Path:
        """Save a global version and point `current` at it."""
        target = self.model_dir / VERSIONS_DIR / f"{version:05d}"
        card = ModelCard.for_model(
            model, list(recipe.class_names), preprocess.to_dict(), version=version,
            task=recipe.task,
            training={"federated": True, "recipe": recipe.to_dict(),
                      "local_train_cases": train_cases, "layout_hash": spec.layout_hash,
                      "optimization": (optimization or FederatedOptimization()).to_dict()},
            metrics={"local_validation": metrics})
        save_checkpoint(target, model, card)
        link_tmp = self.model_dir / f".{CURRENT_LINK}.tmp"
        link_tmp.unlink(missing_ok=True)
        os.symlink(os.path.join(VERSIONS_DIR, target.name), link_tmp)
        os.replace(link_tmp, self.model_dir / CURRENT_LINK)
        return target

    def latest(self) -> tuple[int, dict[str, torch.Tensor]] | None:
        """(version, state dict) of the newest published version, or None."""
        current = self.model_dir / CURRENT_LINK
        if not current.exists():
            return None
        model, card = load_checkpoint(current.resolve())
        return card.version, model.state_dict()
