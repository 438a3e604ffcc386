"""Series handling: choosing, ordering and rejecting DICOM series as a radiology tool would."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from ucadi.cli import main as ucadi_main
from ucadi.ct import (
    InconsistentGeometryError,
    NoPixelDataError,
    NotCTError,
    NotDicomError,
    SeriesNotFoundError,
    TooFewSlicesError,
    UnsupportedTransferSyntaxError,
    load_study,
)
from ucadi.ct.synth.dicom_writer import identity_for, write_series
from ucadi.ct.synth.scanners import SCANNERS

# MPEG-2 video: a transfer syntax no pixel-data plugin decodes.
MPEG2_MAIN_PROFILE = UID("1.2.840.10008.1.2.4.100")


def _series(folder: Path, case: str, slices: int = 42, scanner: str = "ge-discovery-750",
            matrix: int = 16, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hu = rng.uniform(-1000, 800, (slices, matrix, matrix)).astype(np.float32)
    write_series(folder, hu, SCANNERS[scanner], identity_for(case, "P1", seed, "20200101"),
                 False, pixel_mm=20.0, slice_mm=5.0)
    return hu


@pytest.fixture()
def clean(tmp_path: Path) -> Path:
    _series(tmp_path / "clean", "clean")
    return tmp_path / "clean"


def test_series_with_shuffled_renamed_files_and_other_objects_loads_identically(
        clean: Path, tmp_path: Path) -> None:
    messy = tmp_path / "messy"
    (messy / "deep" / "er").mkdir(parents=True)
    files = sorted(clean.iterdir())
    names = [f"x{n:03d}" for n in range(len(files))]
    random.Random(3).shuffle(names)
    for path, name in zip(files, names, strict=True):
        shutil.copy(path, messy / ("deep/er" if name < "x010" else "") / name)
    # A second, smaller axial CT series, an SR-like object without pixels, and stray files.
    _series(tmp_path / "other", "other", slices=41, seed=2)
    for path in (tmp_path / "other").iterdir():
        shutil.copy(path, messy / f"o-{path.name}")
    report = pydicom.dcmread(next((tmp_path / "other").glob("IM*")), stop_before_pixels=True)
    report.Modality = "SR"
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    del report.Rows, report.Columns
    report.save_as(messy / "report.dcm")
    (messy / "README.txt").write_text("exported by PACS")
    (messy / ".DS_Store").write_bytes(b"\x00\x01garbage")

    reference = load_study(clean)
    loaded = load_study(messy)
    np.testing.assert_array_equal(loaded.volume_hu, reference.volume_hu)
    assert loaded.meta.series_uid == reference.meta.series_uid
    assert loaded.meta.stray_files == 2 and loaded.meta.non_image_objects == 1
    reasons = " | ".join(s.reason for s in loaded.meta.skipped_series)
    assert "localizer" in reasons and "smaller axial series" in reasons


def test_slices_are_ordered_by_position_not_by_instance_number(clean: Path) -> None:
    volume = load_study(clean).volume_hu
    for path in clean.glob("IM*"):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = random.Random(str(path)).randint(1, 999)
        ds.save_as(path)
    np.testing.assert_array_equal(load_study(clean).volume_hu, volume)


def test_the_named_series_is_loaded_when_the_caller_chooses_it(clean: Path, tmp_path: Path) -> None:
    _series(tmp_path / "clean", "second", slices=40, seed=5)
    named = identity_for("second", "P1", 5, "").series_uid
    second = load_study(tmp_path / "clean", series_uid=named)
    assert second.volume_hu.shape[0] == 40
    with pytest.raises(SeriesNotFoundError, match="available"):
        load_study(clean, series_uid="1.2.3.4")


def test_a_folder_without_dicom_raises_not_dicom(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(NotDicomError, match="no DICOM files"):
        load_study(tmp_path)


def test_an_mr_image_raises_not_ct() -> None:
    with pytest.raises(NotCTError, match="MR images, not CT"):
        load_study(get_testdata_file("MR_small.dcm", download=False))


def test_ct_objects_without_pixel_data_raise_no_pixel_data(clean: Path, tmp_path: Path) -> None:
    (tmp_path / "headers").mkdir()
    for path in clean.glob("IM*"):
        ds = pydicom.dcmread(path)
        del ds.PixelData
        ds.save_as(tmp_path / "headers" / path.name)
    with pytest.raises(NoPixelDataError, match="no pixel data"):
        load_study(tmp_path / "headers")


def test_a_series_of_fewer_than_40_slices_raises_too_few_slices(tmp_path: Path) -> None:
    _series(tmp_path / "short", "short", slices=12)
    with pytest.raises(TooFewSlicesError, match="12 slices; at least 40"):
        load_study(tmp_path / "short")


def test_mixed_matrix_sizes_raise_inconsistent_geometry(clean: Path) -> None:
    path = next(clean.glob("IM*"))
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 8
    ds.PixelData = np.zeros((8, 8), np.int16).tobytes()
    ds.save_as(path)
    with pytest.raises(InconsistentGeometryError, match="mixes image sizes") as refused:
        load_study(clean)
    assert f"the odd ones: {path}" in str(refused.value), "the message names the odd slice"


def test_duplicate_slice_positions_raise_inconsistent_geometry(clean: Path) -> None:
    path = next(clean.glob("IM*"))
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(clean / "copy-of-one-slice")
    with pytest.raises(InconsistentGeometryError, match="same position"):
        load_study(clean)


def test_gantry_tilt_raises_inconsistent_geometry(clean: Path) -> None:
    for path in clean.glob("IM*"):
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.3 * z, z]  # stacked obliquely: about 17 degrees
        ds.save_as(path)
    with pytest.raises(InconsistentGeometryError, match="gantry tilt"):
        load_study(clean)


def test_an_undecodable_transfer_syntax_raises_unsupported(clean: Path) -> None:
    for path in clean.glob("IM*"):
        ds = pydicom.dcmread(path)
        ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
        ds.file_meta.TransferSyntaxUID = MPEG2_MAIN_PROFILE
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(UnsupportedTransferSyntaxError, match="MPEG2"):
        load_study(clean)


def test_cli_inspect_reports_the_chosen_series_and_skipped_ones(
        clean: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ucadi_main(["ct", "inspect", str(clean), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["slices"] == 42 and report["modality"] == "CT"
    assert report["spacing_mm_zyx"] == [5.0, 20.0, 20.0]
    assert report["contrast"] is None
    reasons = [s["reason"] for s in report["skipped_series"]]
    assert reasons == ["localizer (scout) image, not a volume"]
    assert ucadi_main(["ct", "inspect", str(clean)]) == 0
    assert "slices        42" in capsys.readouterr().out


def test_cli_inspect_bad_input_exits_1_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _series(tmp_path / "short", "short", slices=12)
    assert ucadi_main(["ct", "inspect", str(tmp_path / "short")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ucadi ct: error:") and "at least 40" in err and "\n" not in err


def test_fast_header_reader_agrees_with_pydicom_on_every_file_it_accepts(clean: Path) -> None:
    import warnings

    import pydicom.data

    from ucadi.ct.header_fields import HEADER_PREFIX_BYTES, fast_fields, fields_from_dataset

    shipped = Path(pydicom.data.__file__).parent / "test_files"
    files = [p for p in sorted(shipped.rglob("*")) if p.is_file()] + sorted(clean.iterdir())
    accepted = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            try:
                reference = fields_from_dataset(pydicom.dcmread(path, stop_before_pixels=True))
            except Exception:  # not DICOM, or broken on purpose: pydicom's own test inputs
                continue
            fast = fast_fields(path.read_bytes()[:HEADER_PREFIX_BYTES])
            if fast is not None:
                accepted += 1
                assert fast == reference, path
    assert accepted >= len(list(clean.iterdir())) + 20
