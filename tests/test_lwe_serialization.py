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
from ucadi.lwe.params import PARAMETER_SETS
from ucadi.lwe.serialization import DIGEST_BYTES, HEADER

LAYOUT = hashlib.sha256(b"serial-layout").digest()
SECRET = generate_secret_key()
PLAIN = np.arange(-3000, 6000, dtype=np.int64)
CIPHERTEXT = encrypt(SECRET, PlainSlots(PLAIN, frac_bits=16), layout_hash=LAYOUT, round_number=12)
CIPHERTEXT_2 = encrypt(SECRET, PlainSlots(PLAIN, frac_bits=16), layout_hash=LAYOUT,
                       round_number=12)
BLOB = to_bytes(CIPHERTEXT)


def test_serialized_ciphertext_round_trips_and_decrypts() -> None:
    parsed = from_bytes(BLOB)
    assert parsed.header == CIPHERTEXT.header and parsed.seeds == CIPHERTEXT.seeds
    assert np.array_equal(decrypt(SECRET, parsed), PLAIN)


def test_a_contribution_costs_52_bits_and_a_sum_44_bits_per_value_plus_a_fixed_header() -> None:
    overhead = HEADER.size + 32 + DIGEST_BYTES
    assert SECRET.params.contribution_bits == 52 and SECRET.params.sum_bits == 44
    assert len(BLOB) == PLAIN.size * 52 // 8 + overhead  # 6.5 bytes: 1.63x float32
    total = to_bytes(add([CIPHERTEXT, CIPHERTEXT_2]))
    assert len(total) == PLAIN.size * 44 // 8 + overhead + 32  # 5.5 bytes: 1.38x float32


@pytest.mark.parametrize("name", sorted(PARAMETER_SETS))
@pytest.mark.parametrize("length", [1, 2, 4095, 4096, 4097, 9001])
def test_rounded_bodies_of_any_length_and_set_round_trip_and_decrypt_exactly(name: str,
                                                                            length: int) -> None:
    secret = generate_secret_key(name)
    limit = secret.params.plaintext_limit // secret.params.max_sites  # one site's share
    plain = np.random.default_rng(length).integers(-limit, limit, length)
    plain[0] = limit - 1
    contributions = [from_bytes(to_bytes(encrypt(secret, PlainSlots(plain), layout_hash=LAYOUT,
                                                 round_number=1))) for _ in range(2)]
    assert contributions[0].header.dropped_bits == secret.params.contribution_drop_bits
    total = from_bytes(to_bytes(add(contributions)))
    assert total.header.dropped_bits == secret.params.sum_drop_bits
    assert np.array_equal(decrypt(secret, total), 2 * plain)


def test_rounding_keeps_every_coefficient_within_half_a_dropped_unit() -> None:
    header = CIPHERTEXT.header
    unit = 1 << header.dropped_bits
    stored = from_bytes(BLOB).body
    assert np.all(stored % unit == 0)
    change = (stored - CIPHERTEXT.body).view(np.int64)  # wraps mod 2^64 like the ring
    change = ((change + (1 << 55)) % (1 << 56)) - (1 << 55)  # centred mod q = 2^56
    assert np.abs(change).max() <= unit // 2


def test_a_header_dropping_more_bits_than_its_set_allows_is_rejected() -> None:
    tampered = bytearray(BLOB[:HEADER.size])
    tampered[HEADER.size - 1] = 13  # the dropped-bits byte
    with pytest.raises(CiphertextFormatError, match="drops 13 low bits"):
        read_header(bytes(tampered) + BLOB[HEADER.size:HEADER.size + 32])


def test_header_is_readable_from_the_first_bytes_alone() -> None:
    header, seeds = read_header(BLOB[:HEADER.size + 32])
    assert header.key_id == SECRET.key_id and header.layout_hash == LAYOUT
    assert header.round_number == 12 and header.slot_count == PLAIN.size
    assert header.frac_bits == 16 and seeds == CIPHERTEXT.seeds


def test_sum_serialization_carries_every_contributors_seed() -> None:
    total = from_bytes(to_bytes(add([CIPHERTEXT, CIPHERTEXT_2])))
    assert total.header.contributors == 2 and len(total.seeds) == 2
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
