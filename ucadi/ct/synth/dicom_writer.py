"""Write a synthetic volume as a real DICOM series (CT Image Storage, int16/uint16 with rescale).

Each scanner profile keeps its vendor habits: signed or unsigned storage, the padding value
outside the reconstruction circle, file naming, and sometimes a scout (localizer) image in the
same folder, which a loader must skip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from ucadi.ct.synth.scanners import ScannerProfile

# Stored values are HU - intercept; unsigned 12-bit scanners cannot go below -1024 HU.
RESCALE_INTERCEPT_HU = -1024.0
UNSIGNED_MAX_STORED = 4095
LUNG_DISPLAY_WINDOW = (-600.0, 1500.0)  # centre, width written as the default VOI
PRIVATE_GROUP = 0x0009


@dataclass(frozen=True)
class SeriesIdentity:
    """Who and what a series is: patient, study/series UIDs, date, description."""

    patient_id: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    study_date: str
    description: str
    uid_entropy: str


def identity_for(case_id: str, patient_id: str, seed: int, study_date: str) -> SeriesIdentity:
    """Deterministic UIDs for a case (same seed, same UIDs)."""
    base = [f"ucadi-synth-{seed}", case_id]
    return SeriesIdentity(
        patient_id=patient_id, study_uid=generate_uid(entropy_srcs=base + ["study"]),
        series_uid=generate_uid(entropy_srcs=base + ["series"]),
        frame_of_reference_uid=generate_uid(entropy_srcs=base + ["frame"]),
        study_date=study_date, description="CHEST", uid_entropy="|".join(base))


def _base_dataset(identity: SeriesIdentity, scanner: ScannerProfile, contrast: bool,
                  rows: int, columns: int, pixel_mm: float, thickness_mm: float) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.PatientID = identity.patient_id
    ds.PatientName = f"SYNTH^{identity.patient_id}"
    ds.StudyInstanceUID = identity.study_uid
    ds.SeriesInstanceUID = identity.series_uid
    ds.FrameOfReferenceUID = identity.frame_of_reference_uid
    ds.StudyDate = ds.SeriesDate = identity.study_date
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.SeriesDescription = identity.description
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.Manufacturer = scanner.manufacturer
    ds.ManufacturerModelName = scanner.model
    ds.ConvolutionKernel = scanner.kernel
    ds.KVP = scanner.kvp
    ds.SliceThickness = round(thickness_mm, 3)
    if contrast:
        ds.ContrastBolusAgent = "IOHEXOL 350"
        ds.ContrastBolusRoute = "IV"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [round(pixel_mm, 6), round(pixel_mm, 6)]
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if scanner.signed_storage else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if scanner.signed_storage else 0
    ds.RescaleIntercept = RESCALE_INTERCEPT_HU
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = LUNG_DISPLAY_WINDOW
    if scanner.padding_stored is not None:
        ds.PixelPaddingValue = scanner.padding_stored
    block = ds.private_block(PRIVATE_GROUP, scanner.private_creator, create=True)
    block.add_new(0x01, "LO", f"{scanner.model} {scanner.kernel}")
    return ds


def to_stored(hu: np.ndarray, scanner: ScannerProfile, inside_fov: np.ndarray) -> np.ndarray:
    """HU to the scanner's stored integers, padding outside the reconstruction circle."""
    stored = np.rint(hu - RESCALE_INTERCEPT_HU)
    if scanner.signed_storage:
        low = (scanner.padding_stored + 1) if scanner.padding_stored is not None else -1024
        stored = np.clip(stored, low, 32767).astype(np.int16)
        pad = scanner.padding_stored if scanner.padding_stored is not None else 0
    else:
        stored = np.clip(stored, 1, UNSIGNED_MAX_STORED).astype(np.uint16)
        pad = 0
    stored[..., ~inside_fov] = pad
    return stored


# Elements that differ between the slices of a series; everything else is encoded once.
PER_SLICE_KEYWORDS = ("SOPInstanceUID", "InstanceNumber", "ImagePositionPatient", "SliceLocation",
                      "PixelData")
DICOM_PREAMBLE = bytes(128) + b"DICM"
PIXEL_DATA_TAG = 0x7FE00010


def _encode(ds: Dataset) -> bytes:
    """Explicit VR little endian encoding of a dataset's elements (no preamble or meta)."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


class SeriesEncoder:
    """Encodes a series' slices fast: shared elements once, per-slice elements per file.

    pydicom's dcmwrite re-validates and re-encodes every element for every file (about 9 ms a
    slice); the cohort writes tens of thousands of slices, so the shared header is encoded once
    and spliced, in tag order, with the few elements that change.
    """

    def __init__(self, template: Dataset) -> None:
        self.file_meta = template.file_meta
        varying = {Tag(keyword) for keyword in PER_SLICE_KEYWORDS}
        self.segments: list[bytes | int] = []
        run = Dataset()
        for element in template:
            if element.tag in varying:
                if len(run):
                    self.segments.append(_encode(run))
                    run = Dataset()
                self.segments.append(int(element.tag))
            else:
                run.add(element)
        if len(run):
            self.segments.append(_encode(run))

    def encode(self, ds: Dataset) -> bytes:
        """The file bytes of `ds`, which must share the template's non-varying elements."""
        meta = DicomBytesIO()
        meta.is_little_endian, meta.is_implicit_VR = True, False
        self.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        write_file_meta_info(meta, self.file_meta, enforce_standard=True)
        parts = [DICOM_PREAMBLE, meta.getvalue()]
        for segment in self.segments:
            if isinstance(segment, bytes):
                parts.append(segment)
            else:
                single = Dataset()
                single.add(ds[segment])
                parts.append(_encode(single))
        return b"".join(parts)


def write_series(out_dir: Path, hu: np.ndarray, scanner: ScannerProfile, identity: SeriesIdentity,
                 contrast: bool, pixel_mm: float, slice_mm: float) -> list[Path]:
    """Write the (z, y, x) HU volume as one DICOM file per slice; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    slices, rows, columns = hu.shape
    stored = to_stored(hu, scanner, scanner.field_of_view_mask(rows, columns))
    thickness = max(scanner.slice_thickness_mm, slice_mm)
    ds = _base_dataset(identity, scanner, contrast, rows, columns, pixel_mm, thickness)
    origin_x = -(columns - 1) / 2 * pixel_mm
    origin_y = -(rows - 1) / 2 * pixel_mm
    z_start = -0.5 * (slices - 1) * slice_mm
    paths = []
    encoder: SeriesEncoder | None = None
    for k in range(slices):
        sop_uid = generate_uid(entropy_srcs=[identity.uid_entropy, "slice", str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPInstanceUID = sop_uid
        # Instance numbers count from the head, as scanners do; positions ascend to the head.
        ds.InstanceNumber = slices - k
        z = z_start + k * slice_mm
        ds.ImagePositionPatient = [round(origin_x, 4), round(origin_y, 4), round(z, 4)]
        ds.SliceLocation = round(z, 4)
        ds.add_new(PIXEL_DATA_TAG, "OW", stored[k].tobytes())
        encoder = encoder or SeriesEncoder(ds)
        path = out_dir / scanner.file_pattern.format(index=slices - k, sop_uid=sop_uid)
        path.write_bytes(encoder.encode(ds))
        paths.append(path)
    if scanner.writes_localizer:
        paths.append(_write_localizer(out_dir, hu, scanner, identity, pixel_mm, slice_mm))
    return paths


def _write_localizer(out_dir: Path, hu: np.ndarray, scanner: ScannerProfile,
                     identity: SeriesIdentity, pixel_mm: float, slice_mm: float) -> Path:
    """A coronal scout (mean projection) in its own series, as scanners store it."""
    projection = hu.mean(axis=1)[::-1]
    rows, columns = projection.shape
    ds = _base_dataset(identity, scanner, False, rows, columns, pixel_mm, slice_mm)
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[identity.uid_entropy, "scout"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[identity.uid_entropy, "scout-image"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesNumber = 1
    ds.SeriesDescription = "TOPOGRAM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.ImagePositionPatient = [-(columns - 1) / 2 * pixel_mm, 0.0, (rows - 1) / 2 * slice_mm]
    ds.PixelSpacing = [round(slice_mm, 6), round(pixel_mm, 6)]
    ds.InstanceNumber = 1
    inside = np.ones((rows, columns), dtype=bool)
    ds.PixelData = to_stored(projection, scanner, inside).tobytes()
    path = out_dir / "SCOUT0001"
    ds.save_as(path, enforce_file_format=True)
    return path
