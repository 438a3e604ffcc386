"""Checkpoints: weights as safetensors plus a JSON model card, validated against each other.

A model folder holds `model.safetensors` and `card.json`. Loading rebuilds the architecture the
card names and refuses (CheckpointError) any disagreement: missing or extra tensors, wrong
shapes, a class list that does not match the head, or weights whose digest is not the card's.
Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ucadi.model.base import CTClassifier
from ucadi.model.errors import CheckpointError, ModelError
from ucadi.model.registry import build_model

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
CARD_FORMAT = "ucadi-model-card/1"


@dataclass
class ModelCard:
    """What a model is, what it expects and how it was trained (stored as card.json)."""

    arch: str
    preset: str
    class_names: list[str]
    input_shape: list[int]
    # ucadi.ct.PreprocessConfig.to_dict() of the pipeline the model was trained with.
    preprocess: dict[str, Any]
    # Data summary: sites, cases per class and split, epochs, recipe.
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # Global model version (federated round that produced it; 0 for a local model).
    version: int = 0
    # What the outputs mean (binary, four_class or severity: ucadi.learn.recipe.TASKS), so
    # `ucadi evaluate` reports the task's statistics; "" on cards older than the field (the
    # task then follows from class_names).
    task: str = ""
    parameters: int = 0
    weights_sha256: str = ""
    created_at: str = ""
    format: str = CARD_FORMAT

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Card from its JSON form; CheckpointError names unknown or missing fields."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"model card has unknown fields {unknown}; known: "
                                  f"{sorted(known)}")
        if data.get("format", CARD_FORMAT) != CARD_FORMAT:
            raise CheckpointError(f"model card format {data.get('format')!r} is not supported; "
                                  f"this version reads {CARD_FORMAT!r}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise CheckpointError(f"model card is incomplete: {exc}") from None

    @classmethod
    def for_model(cls, model: CTClassifier, class_names: list[str],
                  preprocess: dict[str, Any], **extra: Any) -> ModelCard:
        """A card describing `model` (architecture, preset, input shape)."""
        return cls(arch=model.arch, preset=model.preset.name, class_names=list(class_names),
                   input_shape=list(model.preset.input_shape), preprocess=dict(preprocess),
                   **extra)


def save_checkpoint(model_dir: Path, model: CTClassifier, card: ModelCard) -> ModelCard:
    """Write model.safetensors and card.json to model_dir (each replaced atomically)."""
    _check_card_matches_model(card, model)
    state = {name: tensor.detach().to("cpu").contiguous()
             for name, tensor in model.state_dict().items()}

    def card_of(digest: str) -> dict[str, Any]:
        card.weights_sha256 = digest
        card.parameters = sum(p.numel() for p in model.parameters())
        card.created_at = card.created_at or datetime.now(UTC).isoformat(timespec="seconds")
        return card.to_dict()

    write_weights_and_card(model_dir, state, {"arch": card.arch, "preset": card.preset},
                           card_of)
    return card


def save_weights(state: dict[str, torch.Tensor], path: Path,
                 metadata: dict[str, str] | None = None) -> None:
    """Write tensors as a safetensors file whose bytes depend on the tensors and metadata only.

    safetensors lists metadata keys in an order that differs from one process to the next, so
    the same model saved at two sites (or after a restart) would get two digests; the header is
    rewritten in place with the keys sorted (same length: the same JSON, reordered).
    """
    save_file(state, str(path), metadata=metadata)
    with open(path, "r+b") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        if "__metadata__" not in header:
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > length:
            raise CheckpointError(f"{path}: the safetensors header did not keep its length "
                                  "when its metadata keys were sorted")
        handle.seek(8)
        handle.write(text.ljust(length, b" "))  # safetensors pads its header with spaces


def read_card(model_dir: Path) -> ModelCard:
    """The card of a model folder, without loading weights."""
    return ModelCard.from_dict(read_card_json(model_dir, "`ucadi train` or save_checkpoint"))


def read_card_json(model_dir: Path, written_by: str) -> dict[str, Any]:
    """The JSON object in a model folder's card.json (CheckpointError when absent or not an
    object); `written_by` names what makes such folders, for the error message."""
    path = Path(model_dir) / CARD_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found; a model folder holds {CARD_FILE} and "
                              f"{WEIGHTS_FILE} (written by {written_by})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def write_weights_and_card(model_dir: Path, state: dict[str, torch.Tensor],
                           metadata: dict[str, str],
                           card_of: Callable[[str], dict[str, Any]]) -> None:
    """Write model.safetensors and card.json, each replaced atomically; `card_of(digest)` gives
    the card's JSON object once the weights' SHA-256 is known."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    weights_tmp = model_dir / (WEIGHTS_FILE + ".tmp")
    save_weights(state, weights_tmp, metadata=metadata)
    card_tmp = model_dir / (CARD_FILE + ".tmp")
    card_tmp.write_text(json.dumps(card_of(file_sha256(weights_tmp)), indent=2) + "\n")
    os.replace(weights_tmp, model_dir / WEIGHTS_FILE)
    os.replace(card_tmp, model_dir / CARD_FILE)


def load_weights(model_dir: Path, weights_sha256: str) -> dict[str, torch.Tensor]:
    """The tensors of a model folder's model.safetensors, after checking its digest against
    the card's (CheckpointError when missing, replaced or unreadable)."""
    weights = Path(model_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found next to {CARD_FILE}")
    if weights_sha256 and file_sha256(weights) != weights_sha256:
        raise CheckpointError(f"{weights} does not match its card (SHA-256 differs from "
                              f"card.weights_sha256): the weights were replaced or corrupted")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from None


def load_checkpoint(model_dir: Path, device: str = "cpu") -> tuple[CTClassifier, ModelCard]:
    """Model (eval mode, on `device`) and card from a folder, after checking they agree."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found next to {CARD_FILE}")
    try:
        model = build_model(card.arch, card.preset, card.num_classes)
    except ModelError as exc:
        raise CheckpointError(f"model card in {model_dir} cannot be built: {exc}") from None
    _check_card_matches_model(card, model)
    state = load_weights(model_dir, card.weights_sha256)
    check_state_matches(model, state, source=str(weights))
    model.load_state_dict(state)
    return model.to(device).eval(), card


def check_state_matches(model: torch.nn.Module, state: dict[str, torch.Tensor],
                        source: str) -> None:
    """Raise CheckpointError unless `state` has exactly the model's tensor names and shapes."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    problems = []
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        problems.append(f"missing {len(missing)} tensors (e.g. {missing[:3]})")
    if extra:
        problems.append(f"{len(extra)} unexpected tensors (e.g. {extra[:3]})")
    wrong = [f"{name}: {found[name]} vs {expected[name]}" for name in sorted(expected)
             if name in found and found[name] != expected[name]]
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches (e.g. {wrong[:3]})")
    if problems:
        raise CheckpointError(f"weights in {source} do not fit the architecture "
                              f"{getattr(model, 'arch', '?')!r}: " + "; ".join(problems))


def _check_card_matches_model(card: ModelCard, model: CTClassifier) -> None:
    if (card.arch, card.preset) != (model.arch, model.preset.name):
        raise CheckpointError(f"card describes {card.arch}/{card.preset} but the model is "
                              f"{model.arch}/{model.preset.name}")
    if card.num_classes != model.num_classes:
        raise CheckpointError(f"card lists {card.num_classes} class names {card.class_names} "
                              f"but the model has {model.num_classes} outputs")
    if tuple(card.input_shape) != model.preset.input_shape:
        raise CheckpointError(f"card input_shape {card.input_shape} differs from preset "
                              f"{model.preset.name!r} input {list(model.preset.input_shape)}")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
