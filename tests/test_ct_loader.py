"""Loading real and synthetic CT files: Hounsfield units, compressed syntaxes, zip, NIfTI."""

from __future__ import annotations

import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_rescale
from pydicom.uid import CTImageStorage, JPEG2000Lossless, RLELossless

from ucadi.ct import AIR_HU, CTInputError, load_study
from ucadi.ct.hounsfield import OUT_OF_FIELD_HU
from ucadi.ct.synth.dicom_writer import RESCALE_INTERCEPT_HU, identity_for, write_series
from ucadi.ct.synth.scanners import SCANNERS

# CT images shipped inside pydicom's wheel and the pydicom-data package (never downloaded).
REAL_CT_FILES = ["CT_small.dcm", "693_UNCI.dcm", "693_UNCR.dcm", "693_J2KI.dcm", "693_J2KR.dcm",
                 "J2K_pixelrep_mismatch.dcm", "explicit_VR-UN.dcm"]


def _testdata(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data missing)")
    return str(path)


@pytest.mark.parametrize("name", REAL_CT_FILES)
def test_real_ct_files_load_with_pydicoms_hounsfield_units(name: str) -> None:
    path = _testdata(name)
    ds = pydicom.dcmread(path)
    expected = apply_rescale(ds.pixel_array, ds).astype(np.float32)
    study = load_study(path, min_slices=1)
    assert study.volume_hu.shape == (1, *expected.shape)
    assert study.volume_hu.dtype == np.float32
    physical = expected >= OUT_OF_FIELD_HU
    np.testing.assert_array_equal(study.volume_hu[0][physical], expected[physical])
    assert np.all(study.volume_hu[0][~physical] == AIR_HU)
    assert study.spacing_mm[1:] == pytest.approx([float(v) for v in ds.PixelSpacing])


def test_compressed_and_uncompressed_variants_of_one_ct_agree() -> None:
    lossless = load_study(_testdata("693_J2KR.dcm"), min_slices=1).volume_hu
    raw = load_study(_testdata("693_UNCR.dcm"), min_slices=1).volume_hu
    np.testing.assert_array_equal(lossless, raw)


def test_jpeg_ls_slices_decode_through_the_loader(tmp_path: Path) -> None:
    # pydicom ships JPEG-LS lossless only as an MR; relabelled as CT it exercises the decoder.
    for name in ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        ds = pydicom.dcmread(_testdata(name))
        ds.Modality = "CT"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.save_as(tmp_path / name)
    reference = load_study(tmp_path / "MR_small.dcm", min_slices=1).volume_hu
    decoded = load_study(tmp_path / "MR_small_jpeg_ls_lossless.dcm", min_slices=1).volume_hu
    np.testing.assert_array_equal(decoded, reference)


def _series(folder: Path, slices: int = 42, scanner: str = "toshiba-aquilion-one",
            contrast: bool = False, matrix: int = 24) -> np.ndarray:
    rng = np.random.default_rng(7)
    hu = rng.uniform(-1000, 1500, size=(slices, matrix, matrix)).astype(np.float32)
    write_series(folder, hu, SCANNERS[scanner], identity_for("case", "P1", 0, "20200101"),
                 contrast, pixel_mm=10.0, slice_mm=5.0)
    return hu


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "j2k"])
def test_lossless_compressed_series_loads_identically(tmp_path: Path, syntax: str) -> None:
    # OpenJPEG needs at least 64 pixels per side for its default resolution levels.
    _series(tmp_path / "raw", matrix=64)
    (tmp_path / "packed").mkdir()
    for path in (tmp_path / "raw").iterdir():
        ds = pydicom.dcmread(path)
        ds.compress(syntax)
        ds.save_as(tmp_path / "packed" / path.name)
    packed = load_study(tmp_path / "packed")
    assert packed.meta.transfer_syntax == pydicom.uid.UID(syntax).name
    np.testing.assert_array_equal(packed.volume_hu, load_study(tmp_path / "raw").volume_hu)


def test_written_series_round_trips_to_the_same_hounsfield_units(tmp_path: Path) -> None:
    hu = _series(tmp_path / "s")
    study = load_study(tmp_path / "s")
    inside = SCANNERS["toshiba-aquilion-one"].field_of_view_mask(24, 24)
    expected = np.rint(hu - RESCALE_INTERCEPT_HU) + RESCALE_INTERCEPT_HU
    np.testing.assert_array_equal(study.volume_hu[:, inside], expected[:, inside])
    # Padding outside the reconstruction circle becomes air, not -3024 HU.
    assert np.all(study.volume_hu[:, ~inside] == AIR_HU)
    assert study.spacing_mm == pytest.approx((5.0, 10.0, 10.0))
    assert study.meta.contrast is None and study.meta.manufacturer == "TOSHIBA"


def test_contrast_agent_is_reported_when_recorded(tmp_path: Path) -> None:
    _series(tmp_path / "s", contrast=True)
    meta = load_study(tmp_path / "s").meta
    assert meta.contrast is True and "IOHEXOL" in (meta.contrast_agent or "")


def test_zip_file_list_and_folder_load_identically(tmp_path: Path) -> None:
    _series(tmp_path / "s")
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in (tmp_path / "s").iterdir():
            zf.write(path, f"export/{path.name}")
    folder = load_study(tmp_path / "s")
    zipped = load_study(archive)
    listed = load_study(sorted((tmp_path / "s").iterdir(), reverse=True))
    assert zipped.meta.source_kind == "dicom-zip" and listed.meta.source_kind == "dicom-files"
    np.testing.assert_array_equal(zipped.volume_hu, folder.volume_hu)
    np.testing.assert_array_equal(listed.volume_hu, folder.volume_hu)


def test_nifti_volume_loads_in_the_dicom_orientation(tmp_path: Path) -> None:
    _series(tmp_path / "s")
    dicom = load_study(tmp_path / "s")
    dz, dy, dx = dicom.spacing_mm
    # NIfTI stores x, y, z in RAS: DICOM's left/posterior axes become negative x/y steps.
    data = dicom.volume_hu.transpose(2, 1, 0)
    affine = np.diag([-dx, -dy, dz, 1.0])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "study.nii.gz")
    nifti = load_study(tmp_path / "study.nii.gz")
    assert nifti.meta.source_kind == "nifti"
    assert nifti.spacing_mm == pytest.approx(dicom.spacing_mm)
    np.testing.assert_allclose(nifti.volume_hu, dicom.volume_hu)


def test_missing_path_is_a_ct_input_error(tmp_path: Path) -> None:
    with pytest.raises(CTInputError, match="does not exist"):
        load_study(tmp_path / "nowhere")
