"""Ciphertext wire format: round trip, header from the first bytes, truncation and tampering."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ucadi.lwe import (
    CiphertextFormatError,
    PlainSlots,
    add,
    decrypt,
    encrypt,
    from_bytes,
    generate_secret_key,
    read_header,
    to_bytes,
)
from ucadi.lwe.serialization import DIGEST_BYTES, HEADER

LAYOUT = hashlib.sha256(b"serial-layout").digest()
SECRET = generate_secret_key()
PLAIN = np.arange(-3000, 6000, dtype=np.int64)
CIPHERTEXT = encrypt(SECRET, PlainSlots(PLAIN, frac_bits=16), layout_hash=LAYOUT, round_number=12)
BLOB = to_bytes(CIPHERTEXT)


def test_serialized_ciphertext_round_trips_and_decrypts() -> None:
    parsed = from_bytes(BLOB)
    assert parsed.header == CIPHERTEXT.header and parsed.seeds == CIPHERTEXT.seeds
    assert np.array_equal(decrypt(SECRET, parsed), PLAIN)


def test_ciphertext_costs_q_bits_per_value_plus_a_fixed_header() -> None:
    overhead = HEADER.size + 32 + DIGEST_BYTES
    assert len(BLOB) == PLAIN.size * SECRET.params.modulus_bits // 8 + overhead


def test_header_is_readable_from_the_first_bytes_alone() -> None:
    header, seeds = read_header(BLOB[:HEADER.size + 32])
    assert header.key_id == SECRET.key_id and header.layout_hash == LAYOUT
    assert header.round_number == 12 and header.slot_count == PLAIN.size
    assert header.frac_bits == 16 and seeds == CIPHERTEXT.seeds


def test_sum_serialization_carries_every_contributors_seed() -> None:
    other = encrypt(SECRET, PlainSlots(PLAIN, frac_bits=16), layout_hash=LAYOUT, round_number=12)
    total = from_bytes(to_bytes(add([CIPHERTEXT, other])))
    assert total.header.contributors == 2 and len(total.seeds) == 2
    assert len(to_bytes(add([CIPHERTEXT, other]))) == len(BLOB) + 32
    assert np.array_equal(decrypt(SECRET, total), 2 * PLAIN)


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, len(BLOB) - 1))
def test_any_truncation_is_rejected(cut: int) -> None:
    with pytest.raises(CiphertextFormatError):
        from_bytes(BLOB[:cut])


@settings(max_examples=80, deadline=None)
@given(position=st.integers(0, len(BLOB) - 1), flip=st.integers(1, 255))
def test_any_tampered_byte_is_rejected(position: int, flip: int) -> None:
    tampered = bytearray(BLOB)
    tampered[position] ^= flip
    with pytest.raises(CiphertextFormatError):
        from_bytes(bytes(tampered))


def test_appended_bytes_are_rejected() -> None:
    with pytest.raises(CiphertextFormatError, match="truncated or padded"):
        from_bytes(BLOB + b"\0")


def test_foreign_data_is_rejected_as_not_a_ciphertext() -> None:
    with pytest.raises(CiphertextFormatError, match="not a UCADI ciphertext"):
        from_bytes(b"PK\x03\x04" + bytes(200))
