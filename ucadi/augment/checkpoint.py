"""A CycleGAN model folder: the contrast -> non-contrast generator as model.safetensors and a
card.json describing the preset, the HU window, the site and the training run (written and
read with the classifier checkpoints' helpers: digest-checked, nothing unpickled)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from torch import nn

from ucadi.augment.networks import build_generator
from ucadi.augment.presets import AugmentError, CycleGANPreset
from ucadi.augment.translate import ContrastTranslator
from ucadi.model.checkpoint import (
    check_state_matches,
    load_weights,
    read_card_json,
    write_weights_and_card,
)
from ucadi.model.errors import CheckpointError

AUGMENT_CARD_FORMAT = "ucadi-cyclegan-card/1"
DIRECTION = "contrast -> non-contrast"
WRITTEN_BY = "`ucadi augment cyclegan train`"


def save_translator(model_dir: Path, generator: nn.Module, preset: CycleGANPreset,
                    window_hu: tuple[float, float], training: dict[str, Any]) -> dict[str, Any]:
    """Write the generator and its card; returns the card."""
    state = {name: t.detach().to("cpu").contiguous() for name, t in
             generator.state_dict().items()}
    card: dict[str, Any] = {
        "format": AUGMENT_CARD_FORMAT, "kind": "cyclegan-generator", "direction": DIRECTION,
        "preset": preset.to_dict(), "size": preset.size, "window_hu": list(window_hu),
        "training": training, "parameters": sum(p.numel() for p in generator.parameters()),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds")}

    def card_of(digest: str) -> dict[str, Any]:
        card["weights_sha256"] = digest
        return card

    write_weights_and_card(model_dir, state, {"kind": "cyclegan-generator",
                                              "preset": preset.name}, card_of)
    return card


def read_augment_card(model_dir: Path) -> dict[str, Any]:
    """A CycleGAN folder's card (CheckpointError for a missing card or another format)."""
    card = read_card_json(model_dir, WRITTEN_BY)
    if card.get("format") != AUGMENT_CARD_FORMAT:
        raise CheckpointError(f"{Path(model_dir)} holds a {card.get('format')!r} card, not a "
                              f"CycleGAN generator ({AUGMENT_CARD_FORMAT!r}); pass a folder "
                              f"written by {WRITTEN_BY}")
    return card


def load_translator(model_dir: Path) -> ContrastTranslator:
    """The folder's generator, ready to translate (eval mode, CPU)."""
    card = read_augment_card(model_dir)
    try:
        preset = CycleGANPreset(**card["preset"])
        window = (float(card["window_hu"][0]), float(card["window_hu"][1]))
    except (KeyError, TypeError, ValueError, IndexError, AugmentError) as exc:
        raise CheckpointError(f"{Path(model_dir)}/card.json has no usable preset or "
                              f"window_hu: {exc}") from None
    generator = build_generator(preset)
    state = load_weights(model_dir, card.get("weights_sha256", ""))
    check_state_matches(generator, state, source=str(Path(model_dir)))
    generator.load_state_dict(state)
    return ContrastTranslator(generator, preset.size, window, card)
