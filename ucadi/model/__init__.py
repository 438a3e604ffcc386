"""UCADI models: the papers' 3D-DenseNet, baselines, checkpoints with model cards, Grad-CAM."""

from ucadi.model.base import CTClassifier
from ucadi.model.checkpoint import ModelCard, load_checkpoint, read_card, save_checkpoint
from ucadi.model.errors import CheckpointError, ModelError, ModelInputError
from ucadi.model.presets import PRESETS, ModelPreset, get_preset
from ucadi.model.registry import ARCHITECTURES, build_model

__all__ = [
    "ARCHITECTURES", "PRESETS", "CTClassifier", "CheckpointError", "ModelCard", "ModelError",
    "ModelInputError", "ModelPreset", "build_model", "get_preset", "load_checkpoint",
    "read_card", "save_checkpoint",
]
