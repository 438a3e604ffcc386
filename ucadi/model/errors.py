"""Errors raised by model construction, inputs and checkpoints."""

from __future__ import annotations

from ucadi.errors import UcadiError


class ModelError(UcadiError):
    """A model could not be built or used as asked (unknown architecture or preset...)."""


class ModelInputError(ModelError):
    """A tensor given to a model has the wrong shape, dtype or non-finite values."""


class CheckpointError(ModelError):
    """A checkpoint folder is missing files, or its card and its weights disagree."""
