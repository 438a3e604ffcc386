"""Errors raised when a CT study cannot be used, each saying what was wrong and what is accepted."""

from __future__ import annotations

from ucadi.errors import UcadiError


class CTInputError(UcadiError):
    """A CT study (file, folder, zip or NIfTI) that cannot be loaded as a chest CT."""


class NotDicomError(CTInputError):
    """The input holds no readable DICOM object (and is not a NIfTI volume)."""


class NotCTError(CTInputError):
    """The DICOM objects found are images of another modality than CT."""


class NoPixelDataError(CTInputError):
    """The CT objects found carry no image pixels (e.g. structured reports, dose reports)."""


class TooFewSlicesError(CTInputError):
    """The series has fewer slices than the papers' exclusion rule allows (partial scan)."""


class InconsistentGeometryError(CTInputError):
    """Slices of a series disagree: mixed sizes, duplicate positions, gantry tilt, orientation."""


class UnsupportedTransferSyntaxError(CTInputError):
    """The pixel data is encoded with a transfer syntax no installed pydicom plugin decodes."""


class CorruptSliceError(CTInputError):
    """A slice of the chosen series cannot be decoded: truncated, damaged, or its header
    contradicts its pixel data."""


class SeriesNotFoundError(CTInputError):
    """The series the caller named is not in the study."""


def first_line(exc: BaseException) -> str:
    """What a library's exception says, in one line (for a message naming the damaged file)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
