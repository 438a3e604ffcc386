"""The few header fields series handling needs, read fast from a file's first kilobytes.

Ordering a 300-slice series needs every slice's position, but nothing else from most files.
pydicom builds a full Dataset per file (about half a millisecond); for the common encoding
(explicit VR little endian, which every compressed transfer syntax also uses for the header)
this reader walks the elements of a short prefix and decodes only the tags listed here. Anything
unusual (implicit VR, big endian, deflate, sequences of undefined length, a header longer than
the prefix) returns None and the caller falls back to pydicom.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from pydicom.dataset import Dataset

# Most CT headers end well before 8 KiB; longer ones fall back to pydicom.
HEADER_PREFIX_BYTES = 8192
PREAMBLE_BYTES = 128
PIXEL_DATA_TAG = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
# Explicit-VR elements with these VRs have a 2-byte reserved field and a 4-byte length.
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
            b"UV"}
# Transfer syntaxes whose dataset is NOT explicit VR little endian.
OTHER_ENCODINGS = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}

FIELD_TAGS = {
    0x00080008: "ImageType", 0x00080016: "SOPClassUID", 0x00080060: "Modality",
    0x0008103E: "SeriesDescription", 0x00180050: "SliceThickness",
    0x0020000E: "SeriesInstanceUID", 0x00200011: "SeriesNumber",
    0x00200032: "ImagePositionPatient", 0x00200037: "ImageOrientationPatient",
    0x00280008: "NumberOfFrames", 0x00280010: "Rows", 0x00280011: "Columns",
    0x00280030: "PixelSpacing",
}
_UNSIGNED_SHORT = struct.Struct("<H")
_UNSIGNED_LONG = struct.Struct("<I")
_TAG = struct.Struct("<HH")


@dataclass(frozen=True)
class HeaderFields:
    """Identity and geometry of one DICOM object, as series handling needs them."""

    modality: str
    sop_class_uid: str
    series_uid: str
    series_number: str
    series_description: str
    image_type: tuple[str, ...]
    rows: int | None
    columns: int | None
    frames: int
    slice_thickness_mm: float | None
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None

    @property
    def is_image(self) -> bool:
        """True when the object has an image pixel module (rows and columns)."""
        return self.rows is not None and self.columns is not None


def _numbers(text: str | None, count: int) -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.split("\\"))
    except ValueError:
        return None
    # "nan" and "inf" parse as floats but place nothing: treated as missing, like text.
    return values if len(values) == count and all(map(math.isfinite, values)) else None


def _count(text: str) -> int:
    try:
        return int(float(text)) if text else 1
    except ValueError:
        return 1


def _build(raw: dict[str, str | int]) -> HeaderFields:
    def text(keyword: str) -> str:
        return str(raw.get(keyword, "")).strip()

    frames = text("NumberOfFrames")
    thickness = _numbers(text("SliceThickness"), 1)
    rows, columns = raw.get("Rows"), raw.get("Columns")
    return HeaderFields(
        modality=text("Modality").upper(), sop_class_uid=text("SOPClassUID"),
        series_uid=text("SeriesInstanceUID") or "unknown", series_number=text("SeriesNumber"),
        series_description=text("SeriesDescription"),
        image_type=tuple(v.strip().upper() for v in text("ImageType").split("\\") if v.strip()),
        rows=int(rows) if rows not in (None, "") else None,
        columns=int(columns) if columns not in (None, "") else None,
        frames=_count(frames),
        slice_thickness_mm=thickness[0] if thickness else None,
        position=_numbers(text("ImagePositionPatient"), 3),
        orientation=_numbers(text("ImageOrientationPatient"), 6),
        pixel_spacing=_numbers(text("PixelSpacing"), 2))


def fields_from_dataset(ds: Dataset) -> HeaderFields:
    """The fields of a pydicom Dataset (the general path)."""
    raw: dict[str, str | int] = {}
    for keyword in FIELD_TAGS.values():
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        if keyword in ("Rows", "Columns"):
            raw[keyword] = int(value)
        elif isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            raw[keyword] = "\\".join(str(v) for v in value)
        else:
            raw[keyword] = str(value)
    return _build(raw)


def _element(data: bytes, offset: int) -> tuple[int, bytes, int, int] | None:
    """(tag, VR, value offset, value length) of the explicit-VR element at offset."""
    if offset + 8 > len(data):
        return None
    group, element = _TAG.unpack_from(data, offset)
    vr = data[offset + 4:offset + 6]
    if not (vr.isalpha() and vr.isupper()):
        return None  # not explicit VR after all: let pydicom work out the encoding
    if vr in LONG_VRS:
        if offset + 12 > len(data):
            return None
        length = _UNSIGNED_LONG.unpack_from(data, offset + 8)[0]
        return (group << 16) | element, vr, offset + 12, length
    length = _UNSIGNED_SHORT.unpack_from(data, offset + 6)[0]
    return (group << 16) | element, vr, offset + 8, length


def fast_fields(prefix: bytes) -> HeaderFields | None:
    """Fields parsed from a file's first bytes, or None when pydicom must read it instead."""
    if len(prefix) < PREAMBLE_BYTES + 4 or prefix[PREAMBLE_BYTES:PREAMBLE_BYTES + 4] != b"DICM":
        return None
    offset = PREAMBLE_BYTES + 4
    syntax = None
    while True:
        parsed = _element(prefix, offset)
        if parsed is None:
            return None
        tag, _, start, length = parsed
        if tag >> 16 != 0x0002:
            break
        if tag == 0x00020010:
            syntax = prefix[start:start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        offset = start + length
    if syntax is None or syntax in OTHER_ENCODINGS:
        return None
    raw: dict[str, str | int] = {}
    while True:
        parsed = _element(prefix, offset)
        if parsed is None:
            return None
        tag, vr, start, length = parsed
        if tag >= PIXEL_DATA_TAG:
            break
        if length == UNDEFINED_LENGTH or start + length > len(prefix):
            return None
        keyword = FIELD_TAGS.get(tag)
        if keyword is not None:
            value = prefix[start:start + length]
            if vr == b"US":
                raw[keyword] = _UNSIGNED_SHORT.unpack_from(value)[0]
            else:
                raw[keyword] = value.rstrip(b"\x00 ").decode("latin-1")
        offset = start + length
    try:
        return _build(raw)
    except ValueError:
        return None
