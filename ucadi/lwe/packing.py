"""Coefficients packed at any whole number of nibbles, 33 to 64 bits each.

The packed form of n coefficients of w bits is their little-endian bit string, coefficient 0
first, padded with zero bits to a whole byte: ceil(n * w / 8) bytes. For w a multiple of 8 a
coefficient is w/8 bytes; for w = 8k + 4 two neighbours share w/4 bytes. Packing and unpacking
are a few strided numpy copies (no Python loop), so a body moves at memory speed; the head and
tail words of a pair cover all its bytes, so `pack_into` writes every byte of its output.
"""

from __future__ import annotations

import numpy as np

MIN_BITS, MAX_BITS = 33, 64


def packed_size(count: int, bits: int) -> int:
    """Bytes of `count` coefficients of `bits` bits."""
    return (count * bits + 7) // 8


def check_bits(bits: int) -> None:
    """Raise ValueError unless `bits` is a packable width."""
    if not MIN_BITS <= bits <= MAX_BITS or bits % 4:
        raise ValueError(f"coefficients pack at a multiple of 4 bits in {MIN_BITS}..{MAX_BITS}, "
                         f"not {bits}")


def pack(values: np.ndarray, bits: int) -> bytes:
    """uint64 coefficients below 2^bits -> their packed bytes (higher bits must be zero)."""
    out = np.empty(packed_size(values.size, bits), dtype=np.uint8)
    pack_into(values, bits, out)
    return out.tobytes()


def pack_into(values: np.ndarray, bits: int, out: np.ndarray) -> None:
    """Pack into `out` (uint8, exactly packed_size bytes; every byte is written)."""
    check_bits(bits)
    values = np.ascontiguousarray(values, dtype=np.uint64)
    if out.dtype != np.uint8 or out.size != packed_size(values.size, bits):
        raise ValueError(f"{values.size} coefficients of {bits} bits need "
                         f"{packed_size(values.size, bits)} bytes, not {out.size}")
    if bits % 8 == 0:
        _write_words(out, 0, values, bits // 8)
        return
    # Two coefficients v0, v1 form one 2w-bit number P = v0 | v1 << w of w/4 bytes: its first
    # 8 bytes, then its last 8 bytes (they overlap in the middle, with the same bits).
    pair_bytes, pairs = bits // 4, values.size // 2
    v0, v1 = values[0:2 * pairs:2], values[1:2 * pairs:2]
    head = _strided(out, 0, pairs, pair_bytes, 8)
    np.bitwise_or(v0, v1 << np.uint64(bits), out=head)
    tail = _strided(out, pair_bytes - 8, pairs, pair_bytes, 8)
    np.bitwise_or(v0 >> np.uint64(8 * (pair_bytes - 8)),
                  v1 << np.uint64(64 - bits), out=tail)
    if values.size % 2:
        last = int(values[-1]).to_bytes(8, "little")[:(bits + 7) // 8]
        out[pairs * pair_bytes:] = np.frombuffer(last, dtype=np.uint8)


def unpack(data: bytes | memoryview, count: int, bits: int) -> np.ndarray:
    """The `count` uint64 coefficients of packed `data` (exactly packed_size(count, bits))."""
    check_bits(bits)
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size != packed_size(count, bits):
        raise ValueError(f"{buffer.size} bytes do not hold {count} coefficients of {bits} bits")
    mask = np.uint64((1 << bits) - 1)
    out = np.empty(count, dtype=np.uint64)
    if count == 0:
        return out
    if bits % 8 == 0:
        width = bits // 8
        # Each coefficient but the last read as the 8-byte word where it starts (in bounds: the
        # next coefficient's bytes follow), then the neighbour's bytes masked off.
        words = _strided(buffer, 0, count - 1, width, 8)
        np.bitwise_and(words, mask, out=out[:-1])
        out[-1] = _last(buffer, (count - 1) * width)
        return out
    pair_bytes, pairs = bits // 4, count // 2
    head = _strided(buffer, 0, pairs, pair_bytes, 8)
    tail = _strided(buffer, pair_bytes - 8, pairs, pair_bytes, 8)
    np.bitwise_and(head, mask, out=out[0:2 * pairs:2])
    np.right_shift(tail, np.uint64(64 - bits), out=out[1:2 * pairs:2])
    if count % 2:
        out[-1] = _last(buffer, pairs * pair_bytes) & mask
    return out


def _strided(buffer: np.ndarray, offset: int, count: int, stride: int, size: int) -> np.ndarray:
    """`count` little-endian unsigned integers of `size` bytes, every `stride` bytes."""
    if count == 0:
        return np.empty(0, dtype=f"<u{size}")
    return np.ndarray((count,), dtype=f"<u{size}", buffer=buffer, offset=offset,
                      strides=(stride,))


def _write_words(out: np.ndarray, offset: int, values: np.ndarray, width: int) -> None:
    """Low `width` bytes of each value at `offset + i * width`, in power-of-two pieces (no two
    writes touch the same byte)."""
    position = 0
    for size in (8, 4, 2, 1):
        if width - position >= size:
            piece = values >> np.uint64(8 * position) if position else values
            np.copyto(_strided(out, offset + position, values.size, width, size), piece,
                      casting="unsafe")  # keeps the low `size` bytes
            position += size


def _last(buffer: np.ndarray, start: int) -> np.uint64:
    """The (up to 8) bytes from `start` to the end as one little-endian word."""
    tail = buffer[start:].tobytes()
    return np.uint64(int.from_bytes(tail[:8], "little"))
