"""`ucadi ct import`: turn a PACS export into a site's data volume (study folders plus the
manifest.csv the trainer reads).

The hospital exports each study as a folder of DICOM files (any layout below it; the loader
chooses the CT series as everywhere else) and writes a labels file naming each study folder,
its patient, its diagnosis and its split. Each study is checked the way training will read it
(decodable CT, at least 40 slices) before it is copied; a study that fails is reported on one
line and left out, so one bad export does not stop the rest. Studies already imported (same
case id, same files) are skipped, so the import can run again after a new export.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

from ucadi.ct.errors import CTInputError
from ucadi.ct.loader import open_study
from ucadi.ct.synth.manifest import MANIFEST_NAME, read_manifest, write_manifest
from ucadi.ct.synth.sites import LABELS, SPLITS
from ucadi.errors import UcadiError

LABEL_COLUMNS = ("study", "patient_id", "label", "split")
STUDIES_DIR = "studies"


class LabelsError(UcadiError):
    """A labels file that is missing, lacks columns, or has a value outside what is accepted."""


@dataclass(frozen=True)
class ImportResult:
    """What an import did: cases now in the manifest, newly copied, and refused studies."""

    cases: int
    copied: int
    refused: list[str]


def read_labels(path: Path) -> list[dict[str, str]]:
    """The labels file's rows, each checked: known label and split, a study named."""
    if not path.is_file():
        raise LabelsError(f"no labels file at {path}; expected a CSV with columns "
                          f"{', '.join(LABEL_COLUMNS)}")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(LABEL_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise LabelsError(f"{path} lacks column(s) {', '.join(sorted(missing))}; expected "
                              f"{', '.join(LABEL_COLUMNS)}")
        rows = list(reader)
    for line, row in enumerate(rows, start=2):
        for column, accepted in (("label", LABELS), ("split", SPLITS)):
            if row[column] not in accepted:
                raise LabelsError(f"{path} line {line}: {column} {row[column]!r} is not one of "
                                  f"{', '.join(accepted)}")
        if not row["study"] or Path(row["study"]).is_absolute() or ".." in Path(row["study"]).parts:
            raise LabelsError(f"{path} line {line}: study {row['study']!r} must be a folder "
                              "relative to the export")
    return rows


def case_id(study: str) -> str:
    """A case id from a study folder's relative path (its parts joined by '_')."""
    return "_".join(Path(study).parts)


def import_export(export: Path, labels: Path, site: str, out: Path) -> ImportResult:
    """Check and copy each labelled study of `export` into `out`, and write out/manifest.csv."""
    rows = read_labels(labels)
    manifest = out / MANIFEST_NAME
    kept = {r.case_id: r.row() for r in read_manifest(manifest)} if manifest.is_file() else {}
    copied, refused = 0, []
    for row in rows:
        case = case_id(row["study"])
        source = export / row["study"]
        try:
            with open_study(source) as study:
                slices, contrast = study.meta.num_slices, study.meta.contrast
        except CTInputError as exc:
            refused.append(f"{row['study']}: {exc}")
            continue
        target = out / STUDIES_DIR / case
        if not target.is_dir():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(source, partial)
            partial.rename(target)
            copied += 1
        kept[case] = {"case_id": case, "patient_id": row["patient_id"], "site": site,
                      "split": row["split"], "label": row["label"],
                      "binary_label": int(row["label"] == "covid"),
                      "severity": int(row.get("severity") or 0), "contrast": int(bool(contrast)),
                      "slices": slices, "series_path": f"{STUDIES_DIR}/{case}", "mask_path": ""}
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(manifest.with_suffix(".tmp"), list(kept.values()))
    manifest.with_suffix(".tmp").replace(manifest)
    return ImportResult(len(kept), copied, refused)
