"""A truncated or bit-flipped slice inside an otherwise good series (issue 18): every decode
failure is a CorruptSliceError naming the file (`ct inspect` exit 1, one line); the training
set skips that study by name; damaged values and headers found by `make chaos` stay errors
with a file name, never NaN inputs or tracebacks."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
from damaged_dicom import DAMAGE, set_text_value

from ucadi.cli import main as ucadi_main
from ucadi.ct import CorruptSliceError, InconsistentGeometryError, load_study
from ucadi.ct.dicom_series import DicomSource, choose_series
from ucadi.ct.synth import read_manifest
from ucadi.learn.data import StudyDataset
from ucadi.learn.workflow import preprocess_for


@pytest.fixture()
def case(tiny_cohort: Path, tmp_path: Path):
    """A tiny-cohort case whose series is a private copy (safe to damage)."""
    record = read_manifest(tiny_cohort)[0]
    copy = tmp_path / "dicom"
    shutil.copytree(record.series_dir, copy)
    return replace(record, series_dir=copy)


def middle_slice(series: Path) -> Path:
    """The file of the series' middle slice (in position order)."""
    chosen = choose_series([DicomSource(p) for p in sorted(series.iterdir())])
    return chosen.slices[len(chosen.slices) // 2].source.path


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_slice_is_a_corrupt_slice_error_naming_the_file(case, damage):
    victim = middle_slice(case.series_dir)
    DAMAGE[damage](victim)
    with pytest.raises(CorruptSliceError, match="cannot be decoded") as refused:
        load_study(case.series_dir)
    assert str(victim) in str(refused.value)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_ct_inspect_ends_with_one_line_naming_the_file_and_exit_1(case, damage, capsys):
    victim = middle_slice(case.series_dir)
    DAMAGE[damage](victim)
    assert ucadi_main(["ct", "inspect", str(case.series_dir)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("ucadi ct: error: ") and victim.name in error
    assert "Traceback" not in error and len(error.splitlines()) == 1


def test_the_training_set_skips_a_damaged_study_by_name_and_counts_the_others(tiny_cohort,
                                                                              case):
    good = [r for r in read_manifest(tiny_cohort) if r.case_id != case.case_id][:2]
    victim = middle_slice(case.series_dir)
    DAMAGE["truncated"](victim)
    with pytest.warns(UserWarning, match=f"study {case.case_id} skipped") as said:
        dataset = StudyDataset([*good, case], preprocess_for("cpu-small"), "binary",
                               train=True, seed=0)
    assert victim.name in str(said[0].message)
    assert [r.case_id for r in dataset.records] == [r.case_id for r in good]
    assert len(dataset) == 2, "the sample count (FedAvg weight) leaves the study out"
    assert dataset.summary()["unreadable_cases"] == 1
    assert dataset.unreadable[0][0] == case.case_id


@pytest.mark.parametrize("slope", ["1e308", "nan"])
def test_a_rescale_slope_without_finite_hounsfield_units_is_refused(case, slope):
    # Found by `make chaos`: 1e308 passed as a float64 and became inf in float32, so the
    # model got NaN inputs (Diagnose answered INVALID_ARGUMENT for a series inspect accepted).
    victim = middle_slice(case.series_dir)
    set_text_value(victim, "RescaleSlope", slope)
    with pytest.raises(CorruptSliceError, match="no finite Hounsfield units") as refused:
        load_study(case.series_dir)
    assert str(victim) in str(refused.value)


@pytest.mark.parametrize("keyword,text,refusal", [
    ("SliceThickness", "abc", None),  # was a ValueError traceback from the metadata
    ("SliceThickness", "nan", None),
    ("ImagePositionPatient", "nan\\0\\0", "without a readable ImagePositionPatient"),
    ("PixelSpacing", "nan\\nan", "non-positive or differing PixelSpacing"),
    ("PixelSpacing", "0\\0", "non-positive or differing PixelSpacing"),
])
def test_damaged_header_values_in_every_slice_are_named_errors_or_unknown_facts(
        case, keyword, text, refusal):
    # Found by `make chaos` with the same damage in every slice: NaN positions were accepted
    # and ordered arbitrarily, a SliceThickness of "abc" ended `ct inspect` with a traceback.
    for file in case.series_dir.iterdir():
        set_text_value(file, keyword, text)
    if refusal is None:
        assert load_study(case.series_dir).meta.slice_thickness_mm is None
        return
    with pytest.raises(InconsistentGeometryError, match=refusal) as refused:
        load_study(case.series_dir)
    assert str(case.series_dir) in str(refused.value), "the message names the files"


def test_a_dicom_file_whose_header_cannot_be_read_is_named_in_the_warnings(case):
    victim = middle_slice(case.series_dir)
    victim.write_bytes(victim.read_bytes()[:300])  # the DICM marker, then a cut header
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = load_study(case.series_dir)
    assert study.meta.num_slices == case.slices - 1
    assert any(str(victim) in w and "header cannot be read" in w for w in study.meta.warnings)
