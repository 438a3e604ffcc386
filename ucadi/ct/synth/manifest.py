"""The cohort's manifest.csv: one row per case, paths relative to the manifest's folder."""

from __future__ import annotations

import csv
from dataclasses import dataclass, fields
from pathlib import Path

from ucadi.errors import UcadiError

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("case_id", "patient_id", "site", "split", "label", "binary_label", "severity",
                    "contrast", "slices", "series_path", "mask_path")


class ManifestError(UcadiError):
    """A manifest that is missing, or lacks the columns the cohort format defines."""


@dataclass(frozen=True)
class CaseRecord:
    """One case of a cohort, with absolute paths resolved against the manifest's folder."""

    case_id: str
    patient_id: str
    site: str
    split: str
    label: str
    binary_label: int
    severity: int
    contrast: int
    slices: int
    series_path: str
    mask_path: str
    series_dir: Path
    mask_file: Path

    def row(self) -> dict[str, object]:
        """The manifest row (relative paths only)."""
        return {name: getattr(self, name) for name in MANIFEST_COLUMNS}


def write_manifest(path: Path, rows: list[dict[str, object]]) -> None:
    """Write manifest rows (dicts with MANIFEST_COLUMNS) as CSV."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_manifest(path: str | Path) -> list[CaseRecord]:
    """Read a cohort manifest into CaseRecords."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"no cohort manifest at {path}; generate one with "
                            "`ucadi synth --preset tiny --out DIR`")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ManifestError(f"{path} lacks column(s) {', '.join(sorted(missing))}; expected "
                                f"{', '.join(MANIFEST_COLUMNS)}")
        integer = {f.name for f in fields(CaseRecord) if f.type in ("int", int)}
        records = []
        for row in reader:
            values = {k: (int(row[k]) if k in integer else row[k]) for k in MANIFEST_COLUMNS}
            records.append(CaseRecord(**values, series_dir=path.parent / row["series_path"],
                                      mask_file=path.parent / row["mask_path"]))
    return records
