"""Coefficient packing at whole nibbles: the little-endian bit string, checked against Python
integers, for every width the parameter sets use and odd lengths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ucadi.lwe.packing import pack, pack_into, packed_size, unpack


def _reference(values: list[int], bits: int) -> bytes:
    total = 0
    for index, value in enumerate(values):
        total |= value << (index * bits)
    return total.to_bytes(packed_size(len(values), bits), "little")


@settings(max_examples=120, deadline=None)
@given(bits=st.sampled_from(range(36, 65, 4)), data=st.data())
def test_packing_is_the_little_endian_bit_string_and_unpacks_back(bits: int,
                                                                   data: st.DataObject) -> None:
    values = data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=40))
    packed = pack(np.array(values, dtype=np.uint64), bits)
    assert packed == _reference(values, bits)
    assert unpack(packed, len(values), bits).tolist() == values


@pytest.mark.parametrize("bits", [40, 44, 52, 56, 64])
def test_a_long_vector_of_extreme_values_round_trips(bits: int) -> None:
    values = np.random.default_rng(bits).integers(0, 1 << 62, 100_001, dtype=np.uint64)
    values %= np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(1 << 62)
    values[::7] = np.uint64((1 << bits) - 1)
    values[1::7] = 0
    packed = pack(values, bits)
    assert len(packed) == (100_001 * bits + 7) // 8
    assert np.array_equal(unpack(packed, values.size, bits), values)


@pytest.mark.parametrize("bits", [8, 32, 50, 68])
def test_widths_outside_whole_nibbles_in_33_to_64_are_refused(bits: int) -> None:
    with pytest.raises(ValueError, match="multiple of 4 bits"):
        pack(np.zeros(3, dtype=np.uint64), bits)


def test_unpacking_the_wrong_number_of_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="do not hold"):
        unpack(bytes(12), 2, 52)


@pytest.mark.parametrize("bits", [40, 44, 52, 56])
@pytest.mark.parametrize("count", [1, 2, 7, 4096])
def test_pack_into_writes_every_byte_of_its_buffer(bits: int, count: int) -> None:
    values = np.random.default_rng(count).integers(0, 1 << bits, count, dtype=np.uint64)
    out = np.full(packed_size(count, bits), 0xFF, dtype=np.uint8)  # stale bytes everywhere
    pack_into(values, bits, out)
    assert out.tobytes() == pack(values, bits)


def test_pack_into_a_buffer_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="need 13 bytes"):
        pack_into(np.zeros(2, dtype=np.uint64), 52, np.empty(14, dtype=np.uint8))
