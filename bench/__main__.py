"""Run the benchmarks: `python -m bench [--only NAME ...] [--quick]`.

Each benchmark module exposes `run(quick: bool) -> list[str]`, printing its own figures and
returning summary lines (figure, baseline, ratio, goal met or not) gathered into one table.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

BENCHMARKS = {
    "ct": "bench.ct_preprocess",
    "model": "bench.model_speed",
    "lwe": "bench.lwe_scheme",
    "masks": "bench.secure_aggregation",
    "neighbours": "bench.mask_neighbours",
    "round": "bench.round_overhead",
    "inference": "bench.inference_service",
    "scale": "bench.sites",
}


def main() -> int:
    """Run the chosen benchmarks and print a summary."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = parser.parse_args()
    summary: list[str] = []
    for name in args.only or list(BENCHMARKS):
        print(f"\n=== benchmark: {name} ===", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(BENCHMARKS[name])
        except ModuleNotFoundError as exc:
            summary.append(f"{name}: not available ({exc})")
            continue
        summary.extend(f"{name}: {line}" for line in module.run(quick=args.quick))
        print(f"({name} took {time.perf_counter() - started:.1f} s)")
    print("\n=== summary ===")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
