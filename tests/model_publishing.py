"""Publishing models the way a site's trainer does, for the inference tests: a checkpoint
folder with its card, and the atomic `current` link switch."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ucadi.ct import PreprocessConfig
from ucadi.model import ModelCard, build_model, save_checkpoint

CLASSES = ["non_covid", "covid"]


def publish(model_dir: Path, version: int, seed: int) -> torch.nn.Module:
    """Write a cpu-small checkpoint of `version` into model_dir (a plain checkpoint folder);
    returns the model in eval mode."""
    torch.manual_seed(seed)
    model = build_model("densenet3d", "cpu-small", num_classes=len(CLASSES))
    card = ModelCard.for_model(model, CLASSES, PreprocessConfig(size=(32, 32)).to_dict(),
                               version=version)
    save_checkpoint(model_dir, model, card)
    return model.eval()


def point_current(root: Path, version: int) -> None:
    """Switch root/current to versions/<version> atomically, as the site trainer does."""
    link = root / "current.tmp"
    link.unlink(missing_ok=True)
    os.symlink(Path("versions") / str(version), link)
    os.replace(link, root / "current")
