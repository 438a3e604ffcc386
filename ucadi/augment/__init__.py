"""Data augmentation: a CycleGAN that turns contrast-enhanced chest CT slices into
non-contrast-looking ones (SPEC section 5), trained inside one site on its own studies."""

from ucadi.augment.checkpoint import load_translator, read_augment_card, save_translator
from ucadi.augment.presets import PRESETS, CycleGANPreset, get_preset
from ucadi.augment.translate import ContrastAugmentation, ContrastTranslator

__all__ = ["PRESETS", "ContrastAugmentation", "ContrastTranslator", "CycleGANPreset",
           "get_preset", "load_translator", "read_augment_card", "save_translator"]
