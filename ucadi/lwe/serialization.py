"""Compact, versioned wire format of ciphertexts (in memory; files in `lwe.stream`).

Layout (little-endian):
    header   86 bytes: magic "UCLW", version u8, scheme u8, parameter set u16, key id 16 B,
             layout hash 32 B, round u64, slot count u64, block start u32, block stop u32,
             contributors u32, fractional bits u8, dropped bits u8
    seeds    32 bytes per contributor (sorted in a sum)
    body     each slot's coefficient of the block range rounded to a multiple of 2^D (D the
             dropped bits), stored as its top Q - D bits, packed (lwe.packing): 52 bits per
             value for a site's ciphertext and 44 for a sum under the default parameter set
    digest   SHA-256 of everything before it
The header alone (first 86 bytes + seeds) says how long the whole thing must be, so a
receiver knows what it gets from the first chunk; the digest catches truncation and tampering
in transit or on disk (authenticity comes from mutual TLS, not from this digest).
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from ucadi.lwe.errors import CiphertextFormatError, ParameterError
from ucadi.lwe.packing import pack_into, packed_size, unpack
from ucadi.lwe.sampling import SEED_BYTES
from ucadi.lwe.scheme import Ciphertext, CiphertextHeader

MAGIC = b"UCLW"
FORMAT_VERSION = 2  # 1: whole bytes per coefficient, no dropped bits
SCHEME_RLWE_SEEDED = 1  # symmetric ring-LWE, seeded a, b = a*s + e + Delta*m
MEDIA_TYPE = "application/vnd.ucadi.lwe-ciphertext"
HEADER = struct.Struct("<4sBBH16s32sQQIIIBB")
DIGEST_BYTES = 32
PACK_SLICE = 1 << 20  # values packed at a time: even, so each slice starts on a whole byte


def encode_header(header: CiphertextHeader, seeds: tuple[bytes, ...]) -> bytes:
    """Fixed header followed by the seeds."""
    if len(seeds) != header.contributors:
        raise ValueError("header.contributors must equal the number of seeds")
    return HEADER.pack(MAGIC, FORMAT_VERSION, SCHEME_RLWE_SEEDED, header.parameter_set,
                       header.key_id, header.layout_hash, header.round_number,
                       header.slot_count, header.block_start, header.block_stop,
                       header.contributors, header.frac_bits,
                       header.dropped_bits) + b"".join(seeds)


def decode_fixed_header(data: bytes) -> CiphertextHeader:
    """Parse and validate the fixed part of a header (the first HEADER.size bytes)."""
    if len(data) < HEADER.size:
        raise CiphertextFormatError(f"ciphertext truncated: {len(data)} bytes, the header "
                                    f"alone is {HEADER.size}")
    (magic, version, scheme, set_id, key_id, layout_hash, round_number, slot_count,
     block_start, block_stop, contributors, frac_bits, dropped_bits) = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CiphertextFormatError(f"not a UCADI ciphertext (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION or scheme != SCHEME_RLWE_SEEDED:
        raise CiphertextFormatError(
            f"unsupported ciphertext format version {version} / scheme {scheme}; this build "
            f"reads version {FORMAT_VERSION}, scheme {SCHEME_RLWE_SEEDED} (ring-LWE, seeded a)")
    header = CiphertextHeader(set_id, key_id, layout_hash, round_number, frac_bits, slot_count,
                              block_start, block_stop, contributors, dropped_bits)
    try:
        params = header.params
    except ParameterError as exc:
        raise CiphertextFormatError(f"ciphertext names an unknown parameter set: {exc}") from exc
    if slot_count < 1 or not 0 <= block_start < block_stop <= header.total_blocks:
        raise CiphertextFormatError(
            f"inconsistent ciphertext header: {slot_count} slots, blocks "
            f"[{block_start}, {block_stop}) of {header.total_blocks}")
    allowed = sorted({0, params.contribution_drop_bits, params.sum_drop_bits})
    if dropped_bits not in allowed:
        raise CiphertextFormatError(f"ciphertext drops {dropped_bits} low bits; {params.name} "
                                    f"allows {', '.join(map(str, allowed))}")
    if not 1 <= contributors <= params.max_sites:
        raise CiphertextFormatError(f"ciphertext claims {contributors} contributors; "
                                    f"{params.name} allows 1..{params.max_sites}")
    return header


def seeds_size(header: CiphertextHeader) -> int:
    """Bytes of the seed list."""
    return header.contributors * SEED_BYTES


def stored_bits(header: CiphertextHeader) -> int:
    """Bits per body coefficient as stored: Q less the dropped bits."""
    return header.params.modulus_bits - header.dropped_bits


def body_size(header: CiphertextHeader, slots: int | None = None) -> int:
    """Bytes of the packed body (or of its first `slots` coefficients)."""
    return packed_size(header.body_slots if slots is None else slots, stored_bits(header))


def serialized_size(header: CiphertextHeader) -> int:
    """Total bytes of a serialized ciphertext with this header."""
    return HEADER.size + seeds_size(header) + body_size(header) + DIGEST_BYTES


def split_seeds(header: CiphertextHeader, data: bytes) -> tuple[bytes, ...]:
    """The seed list from the bytes following the fixed header."""
    if len(data) < seeds_size(header):
        raise CiphertextFormatError("ciphertext truncated inside its seed list")
    seeds = tuple(data[i:i + SEED_BYTES] for i in range(0, seeds_size(header), SEED_BYTES))
    if len(set(seeds)) != len(seeds):
        raise CiphertextFormatError("ciphertext lists the same seed twice")
    return seeds


def read_header(data: bytes) -> tuple[CiphertextHeader, tuple[bytes, ...]]:
    """Header and seeds from the first bytes of a ciphertext (the rest may not have arrived)."""
    header = decode_fixed_header(data)
    return header, split_seeds(header, data[HEADER.size:])


def pack_coefficients(values: np.ndarray, header: CiphertextHeader) -> bytes:
    """uint64 coefficients mod q, rounded to the nearest multiple of 2^dropped_bits, packed at
    Q - dropped_bits bits each (a public rounding: it adds bounded noise, see params.py)."""
    out = np.empty(body_size(header, values.size), dtype=np.uint8)
    pack_coefficients_into(values, header, out)
    return out.tobytes()


def pack_coefficients_into(values: np.ndarray, header: CiphertextHeader, out: np.ndarray) -> None:
    """pack_coefficients into `out` (uint8, exactly the packed size), PACK_SLICE values at a
    time, so a 46 M-value sum needs no whole-vector temporaries."""
    bits, dropped = stored_bits(header), header.dropped_bits
    for start in range(0, values.size, PACK_SLICE):
        part = values[start:start + PACK_SLICE]
        if dropped:
            part = np.add(part, np.uint64(1 << (dropped - 1)), dtype=np.uint64)
            part >>= np.uint64(dropped)
            part &= np.uint64((1 << bits) - 1)
        pack_into(part, bits, out[packed_size(start, bits):packed_size(start + part.size, bits)])


def unpack_coefficients(data: bytes | memoryview, header: CiphertextHeader) -> np.ndarray:
    """Inverse of pack_coefficients, up to the rounding: uint64 coefficients mod q."""
    bits = stored_bits(header)
    count = len(data) * 8 // bits
    if packed_size(count, bits) != len(data):
        raise CiphertextFormatError("ciphertext body is not a whole number of coefficients")
    values = unpack(data, count, bits)
    if header.dropped_bits:
        values <<= np.uint64(header.dropped_bits)
    return values


def serialize(ciphertext: Ciphertext) -> tuple[memoryview, str]:
    """(a ciphertext held in memory as a file's bytes, packed straight into one buffer, and the
    SHA-256 hex of those bytes, the transfer digest) in one hash pass."""
    header = ciphertext.header
    if ciphertext.body.size != header.body_slots:
        raise ValueError("ciphertext body length does not match its header")
    head = encode_header(header, ciphertext.seeds)
    payload_size = len(head) + body_size(header)
    buffer = np.empty(payload_size + DIGEST_BYTES, dtype=np.uint8)
    buffer[:len(head)] = np.frombuffer(head, dtype=np.uint8)
    pack_coefficients_into(ciphertext.body, header, buffer[len(head):payload_size])
    digest = hashlib.sha256(buffer[:payload_size])
    trailer = digest.digest()
    buffer[payload_size:] = np.frombuffer(trailer, dtype=np.uint8)
    digest.update(trailer)  # the whole file's digest continues the payload's
    return memoryview(buffer), digest.hexdigest()


def to_bytes(ciphertext: Ciphertext) -> bytes:
    """Serialize a ciphertext held in memory."""
    return bytes(serialize(ciphertext)[0])


def from_bytes(data: bytes) -> Ciphertext:
    """Parse and verify a serialized ciphertext; CiphertextFormatError if it is not intact."""
    header, seeds = read_header(data)
    expected = serialized_size(header)
    if len(data) != expected:
        raise CiphertextFormatError(f"ciphertext is {len(data)} bytes; its header announces "
                                    f"{expected} (truncated or padded)")
    payload, digest = data[:-DIGEST_BYTES], data[-DIGEST_BYTES:]
    if hashlib.sha256(payload).digest() != digest:
        raise CiphertextFormatError("ciphertext digest mismatch: corrupted or tampered")
    body_start = HEADER.size + seeds_size(header)
    body = unpack_coefficients(memoryview(payload)[body_start:], header)
    return Ciphertext(header, seeds, body)
