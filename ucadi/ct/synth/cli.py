"""`ucadi synth`: generate the synthetic multi-hospital chest-CT cohort."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from ucadi.ct.synth.cohort import generate_cohort
from ucadi.ct.synth.manifest import read_manifest
from ucadi.ct.synth.sites import PRESETS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `synth` command."""
    parser = subparsers.add_parser(
        "synth", help="generate the synthetic multi-hospital CT cohort",
        description="Generate synthetic hospitals' chest CTs (DICOM), lesion masks and "
                    "manifest.csv. Deterministic by seed.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                        help="cohort size: tiny (unit tests), small (demo), medium (experiments), "
                             "small-eval4x (small's training, 4x its evaluation sets), "
                             "paper (papers' counts)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: all CPU cores)")
    parser.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    """Generate the cohort and print a per-site summary."""
    started = time.perf_counter()
    manifest = generate_cohort(args.out, preset=args.preset, seed=args.seed, workers=args.workers)
    records = read_manifest(manifest)
    counts = Counter((r.site, r.split) for r in records)
    for site in dict.fromkeys(r.site for r in records):
        parts = ", ".join(f"{split} {n}" for (s, split), n in counts.items() if s == site)
        print(f"{site:<16} {parts}")
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(f"{len(records)} cases, {size / 1e6:.0f} MB, {time.perf_counter() - started:.1f} s -> "
          f"{manifest}")
    return 0
