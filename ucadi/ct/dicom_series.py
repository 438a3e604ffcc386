"""DICOM series handling as a radiology viewer does it: scan headers, group, choose, order, check.

Only headers are read here (a fast reader of the first kilobytes, pydicom where the encoding
needs it); the loader decodes pixels later, and only for the slices it needs.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
)

from ucadi.ct.errors import (
    CTInputError,
    InconsistentGeometryError,
    NoPixelDataError,
    NotCTError,
    NotDicomError,
    SeriesNotFoundError,
    TooFewSlicesError,
    first_line,
)
from ucadi.ct.header_fields import (
    HEADER_PREFIX_BYTES,
    PREAMBLE_BYTES,
    HeaderFields,
    fast_fields,
    fields_from_dataset,
)

# The papers exclude studies with fewer slices: they are partial scans, not a whole chest.
MIN_SLICES = 40
# Positions closer than this along the slice normal are the same slice position (duplicates).
DUPLICATE_POSITION_MM = 0.01
# Slices stacked off the normal by more than this angle were acquired with gantry tilt.
MAX_TILT_DEGREES = 0.5
# An image whose normal is within this angle of the patient's z axis is axial.
MAX_AXIAL_OBLIQUITY_DEGREES = 30.0
# Orientation cosines that differ by more than this belong to differently oriented slices.
ORIENTATION_TOLERANCE = 1e-3
# Image storage classes of CT: an object of these classes without Rows/Columns is damaged.
CT_IMAGE_CLASSES = {CTImageStorage, EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage}
# Gaps larger than this multiple of the median spacing are reported (missing slices).
UNEVEN_SPACING_RATIO = 1.5



@dataclass(eq=False)
class DicomSource:
    """Where one DICOM object's bytes live: a file on disk or a member of an open zip archive."""

    path: Path
    member: str | None = None
    archive: zipfile.ZipFile | None = None

    def read_prefix(self, size: int) -> bytes:
        """The object's first `size` bytes."""
        if self.archive is not None and self.member is not None:
            with self.archive.open(self.member) as handle:
                return handle.read(size)
        with open(self.path, "rb") as handle:
            return handle.read(size)

    def read_fields(self) -> HeaderFields:
        """The header fields series handling needs (fast path, else pydicom)."""
        return fast_fields(self.read_prefix(HEADER_PREFIX_BYTES)) \
            or fields_from_dataset(self.read(pixels=False))

    def read(self, *, pixels: bool) -> Dataset:
        """Parse the object; without pixels, parsing stops at the PixelData tag."""
        fp: str | io.BytesIO = str(self.path)
        if self.archive is not None and self.member is not None:
            fp = io.BytesIO(self.archive.read(self.member))
        if pixels:
            return pydicom.dcmread(fp)
        return pydicom.dcmread(fp, stop_before_pixels=True)

    def __str__(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)


@dataclass
class SliceHeader:
    """One image object: where it is, its header fields and the geometry needed to place it."""

    source: DicomSource
    fields: HeaderFields
    rows: int
    columns: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None


@dataclass
class SkippedSeries:
    """A series that was not chosen, and why."""

    series_uid: str
    description: str
    slices: int
    reason: str


@dataclass
class ChosenSeries:
    """The axial CT series to load, its slices ordered along the normal, and what was skipped."""

    series_uid: str
    slices: list[SliceHeader]
    positions_mm: np.ndarray
    spacing_mm: tuple[float, float, float]
    skipped: list[SkippedSeries] = field(default_factory=list)
    stray_files: int = 0
    non_image_objects: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class SeriesScan:
    """What a header scan found: CT image series by UID, and everything it could not use."""

    ct_series: dict[str, list[SliceHeader]] = field(default_factory=lambda: defaultdict(list))
    other_images: dict[str, str] = field(default_factory=dict)
    ct_without_pixels: int = 0
    non_image_objects: int = 0
    stray_files: int = 0
    # Files marked as DICOM whose header cannot be read: "file (why)".
    unreadable: list[str] = field(default_factory=list)


def scan_headers(sources: list[DicomSource]) -> SeriesScan:
    """Read each object's header and sort it into CT image series, other images or non-images."""
    scan = SeriesScan()
    for source in sources:
        try:
            fields = source.read_fields()
        except Exception as exc:  # pydicom raises many types for a damaged header
            _not_usable(scan, source, first_line(exc))
            continue
        if not fields.sop_class_uid and not fields.modality:
            _not_usable(scan, source, "no SOPClassUID or Modality: the header is cut short or "
                                      "damaged")
            continue
        if fields.modality != "CT":
            if fields.is_image:
                scan.other_images[fields.series_uid] = fields.modality or "unknown"
            else:
                scan.non_image_objects += 1
            continue
        if not fields.is_image:
            if fields.sop_class_uid in CT_IMAGE_CLASSES:
                # pydicom reads a header cut short without complaint, up to where it ends.
                scan.unreadable.append(f"{source} (a CT image object without Rows/Columns: the "
                                       "header is cut short or damaged)")
            else:
                scan.ct_without_pixels += 1
            continue
        spacing = fields.pixel_spacing
        scan.ct_series[fields.series_uid].append(SliceHeader(
            source=source, fields=fields, rows=int(fields.rows), columns=int(fields.columns),  # type: ignore[arg-type]
            position=np.asarray(fields.position) if fields.position else None,
            orientation=np.asarray(fields.orientation) if fields.orientation else None,
            pixel_spacing=(spacing[0], spacing[1]) if spacing else None,
        ))
    return scan


def _not_usable(scan: SeriesScan, source: DicomSource, why: str) -> None:
    """Count a file without a usable header: damaged DICOM if it is marked as DICOM, else stray."""
    try:
        marked = source.read_prefix(PREAMBLE_BYTES + 4)[PREAMBLE_BYTES:] == b"DICM"
    except OSError:
        marked = False
    if marked:
        scan.unreadable.append(f"{source} ({why})")
    else:
        scan.stray_files += 1


def _files(slices: list[SliceHeader]) -> str:
    """The files of a few slices, for messages that must say which files are wrong."""
    named = ", ".join(str(s.source) for s in slices[:3])
    return named + (f" and {len(slices) - 3} more" if len(slices) > 3 else "")


def _odd_ones(slices: list[SliceHeader], value: Callable[[SliceHeader], object]
              ) -> list[SliceHeader]:
    """The slices whose `value` differs from the one most slices share."""
    counts = Counter(value(s) for s in slices)
    usual = counts.most_common(1)[0][0]
    return [s for s in slices if value(s) != usual]


def _describe(slices: list[SliceHeader]) -> str:
    fields = slices[0].fields
    number, text = fields.series_number, fields.series_description
    return f"#{number} {text}".strip() if number else text


def order_slices(slices: list[SliceHeader], series_uid: str) -> ChosenSeries:
    """Order one series' slices by position along the slice normal, checking its geometry."""
    uid = series_uid
    if any(s.fields.frames > 1 for s in slices):
        raise InconsistentGeometryError(
            f"series {uid} holds multi-frame (Enhanced CT) objects; export it as single-frame "
            "CT Image Storage slices")
    sizes = {(s.rows, s.columns) for s in slices}
    if len(sizes) > 1:
        listed = ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        odd = _odd_ones(slices, lambda s: (s.rows, s.columns))
        raise InconsistentGeometryError(
            f"series {uid} mixes image sizes ({listed}; the odd ones: {_files(odd)}); all "
            "slices of a series must share one matrix size")
    unplaced = [s for s in slices if s.position is None or s.orientation is None]
    if unplaced:
        raise InconsistentGeometryError(
            f"series {uid} has slices without a readable ImagePositionPatient/"
            f"ImageOrientationPatient ({_files(unplaced)}); slices cannot be placed without them")
    orientations = np.stack([s.orientation for s in slices])  # type: ignore[misc]
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        odd = _odd_ones(slices, lambda s: tuple(np.round(s.orientation, 3)))  # type: ignore[arg-type]
        raise InconsistentGeometryError(
            f"series {uid} has slices with different orientations (the odd ones: "
            f"{_files(odd)}); a volume needs parallel slices")
    unmeasured = [s for s in slices if s.pixel_spacing is None or min(s.pixel_spacing) <= 0]
    if unmeasured or len({s.pixel_spacing for s in slices}) > 1:
        odd = unmeasured or _odd_ones(slices, lambda s: s.pixel_spacing)
        raise InconsistentGeometryError(
            f"series {uid} has missing, non-positive or differing PixelSpacing between slices "
            f"(the odd ones: {_files(odd)})")
    row_cosine, column_cosine = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row_cosine, column_cosine)
    if abs(np.linalg.norm(normal) - 1.0) > 0.01:
        raise InconsistentGeometryError(
            f"series {uid} has an invalid ImageOrientationPatient {orientations[0].tolist()}")
    positions = np.stack([s.position for s in slices])  # type: ignore[misc]
    along_normal = positions @ normal
    order = np.argsort(along_normal, kind="stable")
    ordered = [slices[i] for i in order]
    distances = along_normal[order]
    gaps = np.diff(distances)
    if len(gaps) and gaps.min() < DUPLICATE_POSITION_MM:
        first = int(np.argmin(gaps))
        raise InconsistentGeometryError(
            f"series {uid} has two or more slices at the same position "
            f"({float(distances[first]):.2f} mm along the normal: "
            f"{_files(ordered[first:first + 2])}); the folder may hold the series twice - keep "
            "one copy")
    warnings: list[str] = []
    if len(ordered) > 1:
        displacement = positions[order[-1]] - positions[order[0]]
        off_normal = np.linalg.norm(displacement - (displacement @ normal) * normal)
        tilt = np.degrees(np.arctan2(off_normal, abs(displacement @ normal)))
        if tilt > MAX_TILT_DEGREES:
            raise InconsistentGeometryError(
                f"series {uid} was acquired with gantry tilt ({tilt:.1f} degrees between the slice "
                "normal and the stacking direction); resample it to an orthogonal grid first")
        median_gap = float(np.median(gaps))
        if gaps.max() > UNEVEN_SPACING_RATIO * median_gap:
            warnings.append(
                f"uneven slice spacing: gaps from {gaps.min():.2f} to {gaps.max():.2f} mm "
                f"(median {median_gap:.2f} mm); slices may be missing")
    else:
        median_gap = ordered[0].fields.slice_thickness_mm or 1.0
    row_mm, column_mm = ordered[0].pixel_spacing  # type: ignore[misc]
    return ChosenSeries(series_uid=uid, slices=ordered, positions_mm=distances,
                        spacing_mm=(median_gap, float(row_mm), float(column_mm)),
                        warnings=warnings)


def _evaluate(slices: list[SliceHeader], uid: str,
              min_slices: int) -> ChosenSeries | tuple[str, CTInputError]:
    """The ordered series if it is a usable axial CT volume, else (reason, error)."""
    if "LOCALIZER" in slices[0].fields.image_type:
        return "localizer (scout) image, not a volume", CTInputError(
            f"series {uid} is a localizer (scout), not an axial volume")
    try:
        chosen = order_slices(slices, uid)
    except InconsistentGeometryError as exc:
        return str(exc), exc
    normal = np.cross(chosen.slices[0].orientation[:3], chosen.slices[0].orientation[3:])  # type: ignore[index]
    obliquity = np.degrees(np.arccos(min(1.0, abs(float(normal[2])))))
    if obliquity > MAX_AXIAL_OBLIQUITY_DEGREES:
        return (f"not axial (slice normal {obliquity:.0f} degrees from the patient's z axis)",
                InconsistentGeometryError(
                    f"series {uid} is not axial (normal {obliquity:.0f} degrees from z); "
                    "an axial chest CT series is required"))
    if len(slices) < min_slices:
        return (f"{len(slices)} slices, fewer than {min_slices}",
                TooFewSlicesError(
                    f"series {uid} has {len(slices)} slices; at least {min_slices} are needed "
                    "(shorter series are partial scans and excluded)"))
    return chosen


def choose_series(sources: list[DicomSource], series_uid: str | None = None,
                  min_slices: int = MIN_SLICES, where: str = "input") -> ChosenSeries:
    """Pick the axial CT image series to load (or the named one) and order its slices."""
    scan = scan_headers(sources)
    if not scan.ct_series:
        if scan.other_images:
            found = ", ".join(sorted(set(scan.other_images.values())))
            raise NotCTError(f"{where} holds {found} images, not CT; a chest CT series "
                             "(Modality CT) is required")
        if scan.ct_without_pixels or scan.non_image_objects:
            raise NoPixelDataError(
                f"{where} holds {scan.ct_without_pixels + scan.non_image_objects} DICOM object(s) "
                "without image pixels (reports, dose or structure objects); a CT image series "
                "is required")
        damaged = (f"; damaged DICOM: {', '.join(scan.unreadable[:3])}" if scan.unreadable
                   else "")
        raise NotDicomError(
            f"{where} contains no DICOM files ({scan.stray_files} file(s) were not DICOM"
            f"{damaged}); give a folder or zip of DICOM files, a DICOM file list, or a "
            "NIfTI .nii/.nii.gz volume")
    skipped = [SkippedSeries(uid, "", 0, f"{modality} images, not CT")
               for uid, modality in scan.other_images.items()]
    if series_uid is not None and series_uid not in scan.ct_series:
        raise SeriesNotFoundError(
            f"series {series_uid} is not among the CT series of {where}; available: "
            + ", ".join(f"{uid} ({len(s)} slices)" for uid, s in scan.ct_series.items()))
    usable: list[ChosenSeries] = []
    failures: list[tuple[int, CTInputError]] = []
    for uid, slices in scan.ct_series.items():
        if series_uid is not None and uid != series_uid:
            skipped.append(SkippedSeries(uid, _describe(slices), len(slices),
                                         "not the named series"))
            continue
        problem = _evaluate(slices, uid, min_slices)
        if isinstance(problem, ChosenSeries):
            usable.append(problem)
        else:
            skipped.append(SkippedSeries(uid, _describe(slices), len(slices), problem[0]))
            failures.append((len(slices), problem[1]))
    if not usable:
        failures.sort(key=lambda item: item[0], reverse=True)
        error = failures[0][1]
        if scan.unreadable:  # e.g. a series one short of MIN_SLICES because a file is damaged
            raise type(error)(f"{error}; left out as damaged: {', '.join(scan.unreadable[:3])}")
        raise error
    # A radiologist reads the most complete axial series; ties go to the thinnest slices.
    usable.sort(key=lambda c: (-len(c.slices), c.spacing_mm[0]))
    chosen = usable[0]
    for other in usable[1:]:
        skipped.append(SkippedSeries(other.series_uid, _describe(other.slices), len(other.slices),
                                     f"smaller axial series than the chosen one "
                                     f"({len(other.slices)} vs {len(chosen.slices)} slices)"))
    chosen.skipped = skipped
    chosen.stray_files = scan.stray_files
    chosen.warnings += [f"{entry} is marked as DICOM but its header cannot be read; left out"
                        for entry in scan.unreadable]
    chosen.non_image_objects = scan.non_image_objects + scan.ct_without_pixels
    return chosen

