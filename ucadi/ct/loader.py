"""Load a chest CT study (DICOM folder, zip, file list or NIfTI) as a Hounsfield volume.

`open_study` reads headers only and returns a `StudySource` that decodes any subset of slices;
`load_study` decodes them all. Preprocessing uses the subset path so that only the sampled
slices' pixels are ever decoded.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ucadi.ct.dicom_series import (
    MIN_SLICES,
    ChosenSeries,
    DicomSource,
    SkippedSeries,
    choose_series,
)
from ucadi.ct.errors import (
    CorruptSliceError,
    CTInputError,
    NoPixelDataError,
    NotDicomError,
    TooFewSlicesError,
    UnsupportedTransferSyntaxError,
    first_line,
)
from ucadi.ct.hounsfield import to_hounsfield

NIFTI_SUFFIXES = (".nii", ".nii.gz")
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class StudyMetadata:
    """What a study is: where it came from, which series, scanner and acquisition facts."""

    source: str
    source_kind: str
    num_slices: int
    modality: str = "CT"
    study_uid: str | None = None
    series_uid: str | None = None
    series_description: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    convolution_kernel: str | None = None
    slice_thickness_mm: float | None = None
    contrast: bool | None = None
    contrast_agent: str | None = None
    transfer_syntax: str | None = None
    skipped_series: tuple[SkippedSeries, ...] = ()
    stray_files: int = 0
    non_image_objects: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return asdict(self)


@dataclass
class CTStudy:
    """A CT volume in Hounsfield units (float32, z-y-x, z ascending along the slice normal)."""

    volume_hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    meta: StudyMetadata


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    return str(value).strip() or None


def _check_decodable(ds: Dataset, source: DicomSource) -> None:
    from pydicom.pixels import get_decoder

    uid = ds.file_meta.TransferSyntaxUID
    try:
        available = get_decoder(uid).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise UnsupportedTransferSyntaxError(
            f"{source}: pixel data is encoded as {uid.name} ({uid}), which no installed decoder "
            "reads; accepted: uncompressed, RLE, JPEG lossless/baseline, JPEG-LS, JPEG 2000 "
            "(decompress it first, e.g. `gdcmconv --raw`)")


def decode_slice_hu(source: DicomSource) -> np.ndarray:
    """Decode one DICOM slice to Hounsfield units (float32, rows x columns)."""
    try:
        ds = source.read(pixels=True)
        if "PixelData" not in ds:
            raise NoPixelDataError(f"{source} has no pixel data; a CT image slice is required")
        _check_decodable(ds, source)
        stored = ds.pixel_array
        padding = None
        if "PixelPaddingValue" in ds:
            value = float(ds.PixelPaddingValue)
            padding = (value, float(ds.get("PixelPaddingRangeLimit", value)))
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    except CTInputError:
        raise
    except Exception as exc:  # pydicom and its decoders raise many types for a damaged file
        raise CorruptSliceError(
            f"{source} cannot be decoded ({first_line(exc)}): the file is truncated or damaged, "
            "or its header contradicts its pixel data; export the series again") from exc
    if stored.ndim != 2:
        raise CorruptSliceError(f"{source} decodes to an image of shape {stored.shape}; a CT "
                                "slice is one greyscale frame (rows x columns)")
    hu = None
    # A damaged slope or intercept ("nan", "1e308": beyond float32) would reach the model as NaN.
    if abs(slope) < FLOAT32_MAX and abs(intercept) < FLOAT32_MAX:
        with np.errstate(over="ignore", invalid="ignore"):
            hu = to_hounsfield(stored, slope, intercept, padding)
    if hu is None or not np.isfinite(hu).all():
        raise CorruptSliceError(f"{source} has RescaleSlope {slope} and RescaleIntercept "
                                f"{intercept}, which give no finite Hounsfield units; a CT "
                                "slice needs a finite, non-zero slope and a finite intercept")
    return hu


class StudySource:
    """A study opened by its headers: slice count, spacing, metadata, and decoding on demand."""

    def __init__(self, meta: StudyMetadata, spacing_mm: tuple[float, float, float],
                 series: ChosenSeries | None = None, volume_hu: np.ndarray | None = None,
                 archive: zipfile.ZipFile | None = None) -> None:
        self.meta = meta
        self.spacing_mm = spacing_mm
        self._series = series
        self._volume = volume_hu
        self._archive = archive

    @property
    def num_slices(self) -> int:
        """Number of slices in the chosen series."""
        return self.meta.num_slices

    def read_slices_hu(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the given slice indices (in series order) to HU, shape (len, y, x)."""
        if self._series is None:
            return self._volume[np.asarray(indices, dtype=np.int64)]  # type: ignore[index]
        return np.stack([decode_slice_hu(self._series.slices[i].source) for i in indices])

    def load(self) -> CTStudy:
        """Decode every slice into a CTStudy."""
        volume = self.read_slices_hu(range(self.num_slices))
        return CTStudy(volume_hu=volume, spacing_mm=self.spacing_mm, meta=self.meta)

    def close(self) -> None:
        """Release the open archive, if any."""
        if self._archive is not None:
            self._archive.close()

    def __enter__(self) -> StudySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dicom_meta(chosen: ChosenSeries, source: str, kind: str) -> StudyMetadata:
    ds = chosen.slices[0].source.read(pixels=False)
    agent = _text(ds, "ContrastBolusAgent")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return StudyMetadata(
        source=source, source_kind=kind, num_slices=len(chosen.slices),
        modality=str(ds.get("Modality", "CT")), study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=chosen.series_uid, series_description=_text(ds, "SeriesDescription"),
        manufacturer=_text(ds, "Manufacturer"), model=_text(ds, "ManufacturerModelName"),
        convolution_kernel=_text(ds, "ConvolutionKernel"),
        slice_thickness_mm=chosen.slices[0].fields.slice_thickness_mm,
        # The tag is only "recorded" when present; an empty or NONE agent means no contrast.
        contrast=(agent.upper() not in ("NONE", "NO", "N")) if agent else None,
        contrast_agent=agent, transfer_syntax=syntax.name if syntax else None,
        skipped_series=tuple(chosen.skipped), stray_files=chosen.stray_files,
        non_image_objects=chosen.non_image_objects, warnings=tuple(chosen.warnings))


def _open_nifti(path: Path, min_slices: int) -> StudySource:
    import nibabel as nib

    try:
        image = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as exc:  # nibabel raises many types for a broken file
        raise CTInputError(f"{path} is not a readable NIfTI volume ({exc})") from exc
    if data.ndim != 3:
        raise CTInputError(f"{path} has {data.ndim} dimensions; a 3-D CT volume is required")
    # Canonical NIfTI axes point to the patient's Right, Anterior, Superior; DICOM slices run
    # toward Left (columns) and Posterior (rows): flip x and y, then order the axes z-y-x.
    volume = np.ascontiguousarray(data[::-1, ::-1, :].transpose(2, 1, 0))
    if volume.shape[0] < min_slices:
        raise TooFewSlicesError(f"{path} has {volume.shape[0]} slices; at least {min_slices} "
                                "are needed (shorter volumes are partial scans and excluded)")
    zooms = image.header.get_zooms()[:3]
    meta = StudyMetadata(source=str(path), source_kind="nifti", num_slices=int(volume.shape[0]))
    return StudySource(meta, (float(zooms[2]), float(zooms[1]), float(zooms[0])),
                       volume_hu=volume)


def open_study(path: str | Path | Sequence[str | Path], series_uid: str | None = None,
               min_slices: int = MIN_SLICES) -> StudySource:
    """Open a study by its headers: DICOM folder, zip, single file, list of files, or NIfTI."""
    archive = None
    if isinstance(path, (str, Path)):
        path = Path(path)
        where = str(path)
        if not path.exists():
            raise CTInputError(f"{path} does not exist; give a DICOM folder, zip, file or NIfTI")
        if path.is_dir():
            kind = "dicom-folder"
            sources = [DicomSource(p) for p in sorted(path.rglob("*")) if p.is_file()]
        elif path.name.lower().endswith(NIFTI_SUFFIXES):
            return _open_nifti(path, min_slices)
        elif zipfile.is_zipfile(path):
            kind = "dicom-zip"
            archive = zipfile.ZipFile(path)
            sources = [DicomSource(path, info.filename, archive)
                       for info in archive.infolist() if not info.is_dir()]
        else:
            kind = "dicom-file"
            sources = [DicomSource(path)]
    else:
        kind = "dicom-files"
        sources = [DicomSource(Path(p)) for p in path]
        where = f"the {len(sources)} given files"
    if not sources:
        raise NotDicomError(f"{where} is empty; give a folder or zip of DICOM files or a NIfTI")
    try:
        chosen = choose_series(sources, series_uid, min_slices, where)
    except CTInputError:
        if archive is not None:
            archive.close()
        raise
    meta = _dicom_meta(chosen, where, kind)
    return StudySource(meta, chosen.spacing_mm, series=chosen, archive=archive)


def load_study(path: str | Path | Sequence[str | Path], series_uid: str | None = None,
               min_slices: int = MIN_SLICES) -> CTStudy:
    """Load a chest CT study as a Hounsfield volume with spacing and metadata."""
    with open_study(path, series_uid, min_slices) as study:
        return study.load()
