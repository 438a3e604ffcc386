"""Run the chaos checks: `python -m chaos [--only dicom protocol kill] [--quick] [--seed N]`.

Prints the table 'part | tried | held | failures' (the README quotes it), then each check's
outcomes; exits 1 when anything did not hold.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from chaos.outcome import Check, details, table

PARTS = {"dicom": "chaos.dicom", "protocol": "chaos.protocol", "kill": "chaos.kill"}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts and print what held."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(PARTS), default=None)
    parser.add_argument("--quick", action="store_true",
                        help="the short version each part also runs in `make test`")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where scratch folders go (default: the system's temp folder)")
    args = parser.parse_args(argv)
    checks: list[Check] = []
    for name in args.only or list(PARTS):
        print(f"=== chaos: {name} ===", flush=True)
        started = time.perf_counter()
        part = importlib.import_module(PARTS[name])
        checks += part.run(quick=args.quick, seed=args.seed, work_dir=args.work_dir)
        print(f"({name} took {time.perf_counter() - started:.0f} s)", flush=True)
    print()
    print(table(checks))
    print()
    print(details(checks))
    return 0 if all(check.ok for check in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
