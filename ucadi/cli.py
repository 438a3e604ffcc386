"""The `ucadi` command line: one entry point, subcommands grouped by concern.

Each top-level command lives in the module of its concern and is imported only when used,
so `ucadi ct inspect` does not pay for importing torch or gRPC.
A module named here exposes `register(subparsers)`, which adds its commands; each command's
handler is stored as `func` and returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

if sys.version_info < (3, 11):  # noqa: UP036 - one line instead of a SyntaxError's traceback
    sys.exit(f"ucadi needs Python 3.11 or newer; this is Python {sys.version.split()[0]}")

from ucadi import __version__  # noqa: E402
from ucadi.errors import CommandError, UcadiError  # noqa: E402

# command -> (module that registers it, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "ct": ("ucadi.ct.cli", "inspect and preprocess chest CT studies (DICOM folder, zip, NIfTI)"),
    "synth": ("ucadi.ct.synth.cli", "generate the synthetic multi-hospital CT cohort"),
    "model": ("ucadi.model.cli", "model architectures, presets and summaries"),
    "train": ("ucadi.learn.cli", "train a model locally on a site's (or all sites') data"),
    "evaluate": ("ucadi.learn.cli", "evaluate a model: clinical statistics, ROC, confusion"),
    "explain": ("ucadi.learn.cli", "Grad-CAM heatmaps for a study"),
    "keys": ("ucadi.lwe.cli", "LWE key custodian: create, wrap for sites, rotate"),
    "pki": ("ucadi.ops.pki_cli", "federation CA and per-service/per-site certificates"),
    "serve": ("ucadi.serve_cli", "run a service: aggregator, crypto, trainer, inference"),
    "diagnose": ("services.inference.client", "send a CT study to an inference server"),
    "demo": ("ucadi.demo.cli", "run the whole federation locally on synthetic data"),
    "experiment": ("ucadi.experiments.cli", "federated-learning studies: sync interval, "
                                            "optimisers"),
    "augment": ("ucadi.augment.cli", "contrast CT -> non-contrast CycleGAN (train, apply)"),
    "site": ("ucadi.ops.k8s", "site deployment status from Kubernetes"),
    "health": ("ucadi.ops.health_cli", "check services' gRPC health (the charts' helm test)"),
    "status": ("ucadi.ops.status_cli", "a federation's rounds, sites and stuck states"),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """Parser with every command listed, and the chosen command's module registered."""
    epilog = "commands:\n" + "\n".join(f"  {name:<10} {desc}"
                                        for name, (_, desc) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="ucadi", description=__doc__.splitlines()[0],
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ucadi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command in COMMANDS:
        importlib.import_module(COMMANDS[command][0]).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ucadi` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else None
    if command is not None and command not in COMMANDS:
        print(f"ucadi: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if command is None else 2
    try:
        return int(args.func(args) or 0)
    except UcadiError as exc:
        # 2: the command line itself was wrong (as argparse exits); 1: it failed doing its work.
        print(f"ucadi {command}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, CommandError) else 1
    except KeyboardInterrupt:
        print(f"ucadi {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
