"""Real damage to one slice file of a good series, for the decode-failure tests."""

from __future__ import annotations

import struct
from pathlib import Path

from pydicom.datadict import dictionary_VR
from pydicom.tag import Tag

# Bytes cut from the end of a slice: inside its pixel data (a 64x64 slice holds 8 KiB).
TRUNCATED_BYTES = 1000
# (0028,0100) BitsAllocated, explicit VR "US", length 2: the element before its value.
BITS_ALLOCATED_ELEMENT = struct.pack("<HH", 0x0028, 0x0100) + b"US" + struct.pack("<H", 2)


def truncate_pixel_data(path: Path) -> None:
    """Cut the file short inside its pixel data, as an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[:-TRUNCATED_BYTES])


def flip_bits_allocated(path: Path) -> None:
    """Flip the lowest bit of BitsAllocated (16 -> 17): one bit error in the header."""
    data = bytearray(path.read_bytes())
    value = data.index(BITS_ALLOCATED_ELEMENT) + len(BITS_ALLOCATED_ELEMENT)
    data[value] ^= 1
    path.write_bytes(bytes(data))


DAMAGE = {"truncated": truncate_pixel_data, "bit-flipped": flip_bits_allocated}


def set_text_value(path: Path, keyword: str, text: str) -> None:
    """Write `text` verbatim into an existing text element (explicit VR little endian), even a
    value its VR forbids ("abc" as a decimal string): what a damaged or buggy writer leaves."""
    tag = Tag(keyword)
    data = path.read_bytes()
    start = data.index(struct.pack("<HH", tag.group, tag.element) + dictionary_VR(keyword).encode())
    length = struct.unpack_from("<H", data, start + 6)[0]
    value = text.encode("latin-1")
    value += b" " * (len(value) % 2)
    path.write_bytes(data[:start + 6] + struct.pack("<H", len(value)) + value
                     + data[start + 8 + length:])
