"""`ucadi model`: list architectures and presets, print parameter counts and FLOPs."""

from __future__ import annotations

import argparse

from ucadi.model.presets import PRESETS
from ucadi.model.registry import ARCHITECTURES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `model` command and its subcommands."""
    parser = subparsers.add_parser("model", help="model architectures, presets and summaries")
    commands = parser.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    summary = commands.add_parser("summary", help="parameter count and FLOPs per study")
    summary.add_argument("--arch", choices=sorted(ARCHITECTURES), default="densenet3d")
    summary.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    summary.add_argument("--classes", type=int, default=2, help="output classes (2 or 4)")
    summary.set_defaults(func=_summary)
    presets = commands.add_parser("presets", help="list presets and their input sizes")
    presets.set_defaults(func=_presets)


def _summary(args: argparse.Namespace) -> int:
    from ucadi.model.summary import summarize

    print("\n".join(summarize(args.arch, args.preset, args.classes).lines()))
    return 0


def _presets(args: argparse.Namespace) -> int:
    for preset in PRESETS.values():
        print(f"{preset.name:<11} input {preset.input_shape}  densenet stem/growth "
              f"{preset.stem_channels}/{preset.growth_rate}  baseline width {preset.base_width}")
    return 0
