"""The whole CycleGAN job of one site: read its studies, train, check the HU of a sample of
translated slices, write the model folder and its before/after figure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ucadi.augment.checkpoint import save_translator
from ucadi.augment.figure import before_after_figure, hu_summary
from ucadi.augment.presets import CycleGANPreset
from ucadi.augment.training import collect_slices, train_cyclegan
from ucadi.augment.translate import ContrastTranslator
from ucadi.ct import LUNG_WINDOW_HU

FIGURE_NAME = "before-after.png"
# Contrast slices translated for the card's HU check and the figure.
CHECK_SLICES = 64


def train_site_translator(records: Sequence[Any], site: str, preset: CycleGANPreset,
                          out: Path, *, epochs: int | None = None, seed: int = 0,
                          log: Callable[[str], None] = lambda line: None,
                          on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
                          ) -> dict[str, Any]:
    """Train on `records` (one site's training studies) and write `out`; returns the card."""
    domains = collect_slices(records, preset, LUNG_WINDOW_HU, progress=log)
    for skipped in domains.skipped:
        log(f"skipped {skipped}")
    log(f"{len(domains.contrast)} contrast and {len(domains.noncontrast)} non-contrast slices "
        f"({domains.studies['contrast']} and {domains.studies['non_contrast']} studies of "
        f"{site}); {epochs or preset.epochs} epochs, batch {preset.batch_size}")
    result = train_cyclegan(domains, preset, LUNG_WINDOW_HU, seed=seed, epochs=epochs,
                            on_epoch_end=on_epoch_end)
    translator = ContrastTranslator(result.to_noncontrast, preset.size, LUNG_WINDOW_HU)
    before = domains.contrast[:: max(1, len(domains.contrast) // CHECK_SLICES)]
    after = translator.translate(before)
    summary = hu_summary(before, after, domains.noncontrast)
    training = {"site": site, "split": "train", "studies": domains.studies,
                "slices": {"contrast": len(domains.contrast),
                           "non_contrast": len(domains.noncontrast)},
                "skipped": domains.skipped, "epochs": epochs or preset.epochs, "seed": seed,
                "seconds": result.seconds, "history": result.history, "hu_check": summary}
    card = save_translator(out, result.to_noncontrast, preset, LUNG_WINDOW_HU, training)
    before_after_figure(Path(out) / FIGURE_NAME, before, after, LUNG_WINDOW_HU,
                        f"{site} training slices: contrast -> non-contrast ({preset.name}, "
                        f"seed {seed})", domains.noncontrast)
    log(f"soft-tissue mean HU {summary['soft_tissue_mean_hu_before']:.0f} -> "
        f"{summary['soft_tissue_mean_hu_after']:.0f} (real non-contrast "
        f"{summary['soft_tissue_mean_hu_noncontrast']:.0f}); cycle loss "
        f"{result.history[0]['cycle']:.3f} -> {result.history[-1]['cycle']:.3f}; "
        f"{result.seconds:.0f} s")
    return card
