"""`ucadi ct import` fills a site's data folder from a PACS export: checked studies copied,
a manifest the trainer reads, bad studies refused one per line, and a rerun copies nothing."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from ucadi.ct.importer import LabelsError, read_labels
from ucadi.ct.synth.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]


def ucadi(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ucadi command line in a fresh process."""
    return subprocess.run([sys.executable, "-m", "ucadi.cli", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def write_labels(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["study", "patient_id", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_a_pacs_export_becomes_a_data_folder_the_trainer_reads(tiny_cohort: Path,
                                                               tmp_path: Path) -> None:
    # The export: one folder per study (links to three of the shared cohort's series, so the
    # session's cohort stays untouched) and a folder with no DICOM file in it.
    export = tmp_path / "export"
    cases = read_manifest(tiny_cohort)[:3]
    for number, case in enumerate(cases):
        (export / f"study-{number}").parent.mkdir(exist_ok=True)
        (export / f"study-{number}").symlink_to(case.series_dir)
    broken = export / "broken-study"
    broken.mkdir()
    (broken / "report.txt").write_text("not a DICOM file")
    rows = [{"study": f"study-{number}", "patient_id": c.patient_id, "label": c.label,
             "split": "train"} for number, c in enumerate(cases)]
    rows.append({"study": "broken-study", "patient_id": "p-x", "label": "covid",
                 "split": "val"})
    labels = write_labels(tmp_path / "labels.csv", rows)
    data = tmp_path / "data"

    first = ucadi("ct", "import", "--export", str(export), "--labels", str(labels),
                  "--site", "main-campus", "--out", str(data))
    assert first.returncode == 1, first.stderr
    refused = [line for line in first.stdout.splitlines() if line.startswith("refused")]
    assert len(refused) == 1 and refused[0].startswith("refused broken-study: ")
    assert "3 cases" in first.stdout and "3 copied now, 1 refused" in first.stdout
    imported = read_manifest(data)
    assert [(r.site, r.split, r.label, r.slices) for r in imported] == \
        [("main-campus", "train", c.label, c.slices) for c in cases]
    assert all(r.series_dir.is_dir() and any(r.series_dir.rglob("*")) for r in imported)

    again = ucadi("ct", "import", "--export", str(export), "--labels",
                  str(write_labels(tmp_path / "labels2.csv", rows[:3])), "--site",
                  "main-campus", "--out", str(data))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "3 cases" in again.stdout and "0 copied now, 0 refused" in again.stdout


@pytest.mark.parametrize(("row", "message"), [
    ({"study": "s1", "patient_id": "p", "label": "flu", "split": "train"},
     "line 2: label 'flu' is not one of healthy, covid, other_viral, bacterial"),
    ({"study": "s1", "patient_id": "p", "label": "covid", "split": "training"},
     "line 2: split 'training' is not one of train, val, test, holdout"),
    ({"study": "../etc", "patient_id": "p", "label": "covid", "split": "train"},
     "must be a folder relative to the export"),
])
def test_a_bad_labels_row_is_refused_naming_the_line_value_and_accepted_ones(
        tmp_path: Path, row: dict[str, str], message: str) -> None:
    with pytest.raises(LabelsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_labels(write_labels(tmp_path / "labels.csv", [row]))
