"""Generate the Python protobuf/gRPC stubs in ucadi/v1/ from protos/ucadi/v1/*.proto.

`--check` regenerates into a temporary folder and fails if the checked-in stubs differ,
so CI catches a .proto edited without regenerating.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
STUB_DIR = Path("ucadi") / "v1"
STUB_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_root: Path) -> list[Path]:
    """Run protoc on every contract; return the stub files written under out_root."""
    protos = sorted(str(p.relative_to(PROTO_ROOT))
                    for p in (PROTO_ROOT / "ucadi" / "v1").glob("*.proto"))
    if not protos:
        return []
    include = str(Path(protoc.__file__).parent / "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_root}",
            f"--pyi_out={out_root}", f"--grpc_python_out={out_root}", *protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (out_root / STUB_DIR).iterdir() if p.name.endswith(STUB_SUFFIXES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only verify the checked-in stubs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        current = sorted(p for p in (ROOT / STUB_DIR).iterdir() if p.name.endswith(STUB_SUFFIXES))
        if args.check:
            fresh_names = {p.name for p in fresh}
            current_names = {p.name for p in current}
            stale = sorted(fresh_names ^ current_names)
            stale += [p.name for p in fresh if p.name in current_names
                      and not filecmp.cmp(p, ROOT / STUB_DIR / p.name, shallow=False)]
            if stale:
                print("stubs out of date (run `make protos`): " + ", ".join(sorted(set(stale))))
                return 1
            print(f"protobuf stubs up to date ({len(fresh)} files)")
            return 0
        for old in current:
            old.unlink()
        for new in fresh:
            shutil.copy2(new, ROOT / STUB_DIR / new.name)
        print(f"wrote {len(fresh)} stub files to {STUB_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
