"""Ways to damage one DICOM slice file, each a function (file bytes, rng) -> damaged bytes.

The kinds the issue names: truncation, bit flips, deleted tags, contradictory tags, and a wrong
transfer syntax (the file meta announces an encoding the dataset is not written in). Tag edits
go through pydicom with value validation off, so a value may contradict its own VR as well as
the rest of the file.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import (
    MPEG2MPML,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

Mutation = Callable[[bytes, np.random.Generator], bytes]
PREAMBLE_AND_MAGIC_BYTES = 132
# Bits flipped in one file: one (a single-event upset) up to a burst.
MAX_FLIPPED_BITS = 16

# Elements whose loss matters to a CT pipeline; a random other element is deleted too.
VITAL_KEYWORDS = (
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "PhotometricInterpretation", "SamplesPerPixel", "PixelData", "ImagePositionPatient",
    "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept", "Modality",
    "SOPClassUID", "SeriesInstanceUID", "SliceThickness",
)

# (keyword, values that contradict the file's other elements or the series' other slices).
CONTRADICTIONS: tuple[tuple[str, tuple[object, ...]], ...] = (
    ("Rows", (1, 63, 65, 128, 0, 65535)),
    ("Columns", (1, 63, 65, 128, 0, 65535)),
    ("BitsAllocated", (1, 8, 12, 32, 64, 0)),
    ("BitsStored", (0, 8, 17, 33)),
    ("HighBit", (0, 7, 40)),
    ("PixelRepresentation", (0, 1, 2)),
    ("SamplesPerPixel", (0, 3, 4)),
    ("PhotometricInterpretation", ("RGB", "PALETTE COLOR", "YBR_FULL_422", "", "NONSENSE")),
    ("NumberOfFrames", ("2", "0", "-1", "abc")),
    ("RescaleSlope", ("0", "nan", "inf", "-inf", "abc", "1e308", "")),
    ("RescaleIntercept", ("nan", "abc", "1e38", "")),
    ("PixelSpacing", (["0", "0"], ["abc", "1"], ["0.5"], ["-1", "-1"], ["2", "2"])),
    ("ImagePositionPatient", (["nan", "0", "0"], ["0", "0"], ["abc", "1", "2"],
                              ["1e300", "0", "0"])),
    ("ImageOrientationPatient", (["0", "0", "0", "0", "0", "0"], ["1", "0", "0", "0", "0", "1"],
                                 ["abc", "0", "0", "0", "1", "0"], ["1", "0", "0"])),
    ("Modality", ("MR", "", "SR")),
    ("SliceThickness", ("abc", "-5", "nan")),
    ("PixelPaddingValue", (0, 65535)),
)

# Values pydicom accepts for a text VR, written first and then replaced by the damaged text.
TEXT_PLACEHOLDERS = {"DS": "1234.5678", "IS": "12345678"}

WRONG_SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian,
                  JPEGBaseline8Bit, JPEG2000Lossless, RLELossless, JPEGLSLossless, MPEG2MPML,
                  "1.2.3.4.5.6", "")


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    """The file cut short anywhere: in the preamble, the meta, the header or the pixels."""
    return data[:int(rng.integers(0, len(data)))]


def flip_bits(data: bytes, rng: np.random.Generator) -> bytes:
    """Up to MAX_FLIPPED_BITS bits flipped; half the time all of them in the header."""
    damaged = bytearray(data)
    header_end = max(PREAMBLE_AND_MAGIC_BYTES + 1, _pixel_data_offset(data))
    end = header_end if rng.random() < 0.5 else len(data)
    for _ in range(int(rng.integers(1, MAX_FLIPPED_BITS + 1))):
        position = int(rng.integers(PREAMBLE_AND_MAGIC_BYTES, end))
        damaged[position] ^= 1 << int(rng.integers(0, 8))
    return bytes(damaged)


def delete_tag(data: bytes, rng: np.random.Generator) -> bytes:
    """One vital element deleted, or any element of the dataset or its file meta."""
    ds = _read(data)
    choice = rng.random()
    if choice < 0.7:
        keyword = str(rng.choice(VITAL_KEYWORDS))
        if keyword in ds:
            del ds[keyword]
    elif choice < 0.9:
        tags = [element.tag for element in ds]
        del ds[tags[int(rng.integers(0, len(tags)))]]
    else:
        tags = [element.tag for element in ds.file_meta if element.tag != 0x00020000]
        del ds.file_meta[tags[int(rng.integers(0, len(tags)))]]
    return _write(ds)


def contradict_tag(data: bytes, rng: np.random.Generator) -> bytes:
    """One element set to a value that contradicts the pixel data, the series or its VR."""
    ds = _read(data)
    keyword, values = CONTRADICTIONS[int(rng.integers(0, len(CONTRADICTIONS)))]
    value = values[int(rng.integers(0, len(values)))]
    if isinstance(value, int):
        # Ambiguous VRs ("US or SS") are written as unsigned, as the rest of the file is.
        ds.add_new(keyword, dictionary_VR(keyword).split(" ")[0], value)
        return _write(ds)
    return _with_text_value(ds, keyword, value if isinstance(value, list) else [value])


def contradict_pixel_length(data: bytes, rng: np.random.Generator) -> bytes:
    """PixelData shorter or longer than Rows x Columns x BitsAllocated say."""
    ds = _read(data)
    pixels = bytes(ds.PixelData)
    cut = int(rng.integers(0, len(pixels)))
    ds.PixelData = pixels[:cut] if rng.random() < 0.5 else pixels + pixels[:cut]
    return _write(ds)


def leave_series(data: bytes, rng: np.random.Generator) -> bytes:
    """The slice moved to a series of its own (SeriesInstanceUID changed)."""
    ds = _read(data)
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(rng.integers(0, 2**62))])
    return _write(ds)


def wrong_transfer_syntax(data: bytes, rng: np.random.Generator) -> bytes:
    """The file meta announces another transfer syntax; the dataset bytes stay as they were."""
    meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
    dataset_start = PREAMBLE_AND_MAGIC_BYTES + 12 + int(meta.FileMetaInformationGroupLength)
    syntax = WRONG_SYNTAXES[int(rng.integers(0, len(WRONG_SYNTAXES)))]
    with pydicom_config.disable_value_validation():
        meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    buffer.write(data[:PREAMBLE_AND_MAGIC_BYTES])
    write_file_meta_info(buffer, meta, enforce_standard=False)
    return buffer.getvalue() + data[dataset_start:]


MUTATIONS: dict[str, Mutation] = {
    "truncation": truncate,
    "bit flips": flip_bits,
    "deleted tag": delete_tag,
    "contradictory tag": contradict_tag,
    "pixel length": contradict_pixel_length,
    "moved to another series": leave_series,
    "wrong transfer syntax": wrong_transfer_syntax,
}


def _pixel_data_offset(data: bytes) -> int:
    """Where the PixelData element starts (the end of the header), or the file's end."""
    marker = data.rfind(struct.pack("<HH", 0x7FE0, 0x0010))
    return marker if marker > 0 else len(data)


def _with_text_value(ds: Dataset, keyword: str, values: list[str]) -> bytes:
    """The file with a text element holding `values` verbatim, even ones its VR forbids
    ("abc" as a decimal string): pydicom writes a placeholder that is then replaced."""
    vr = dictionary_VR(keyword)
    placeholder = [TEXT_PLACEHOLDERS.get(vr, "PLACEHOLDER")] * len(values)
    with pydicom_config.disable_value_validation():
        ds.add_new(keyword, vr, placeholder)
    tag = Tag(keyword)
    prefix = struct.pack("<HH", tag.group, tag.element) + vr.encode()

    def element(texts: list[str]) -> bytes:
        value = "\\".join(texts).encode("latin-1")
        value += b" " * (len(value) % 2)
        return prefix + struct.pack("<H", len(value)) + value
    written = _write(ds)
    return written.replace(element(placeholder), element(values), 1)


def _read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data), force=True)


def _write(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    with pydicom_config.disable_value_validation():
        ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()
