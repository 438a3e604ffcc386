"""Fixed-point codec and encrypted weighted FedAvg: precision, bounds, refusals."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ucadi.lwe import (
    EncodingError,
    FixedPointCodec,
    add,
    decrypt,
    encode_update,
    encrypt,
    fedavg,
    generate_secret_key,
    get_parameters,
    split_weight,
)
from ucadi.lwe.params import PARAMETER_SETS

LAYOUT = hashlib.sha256(b"codec-layout").digest()
SECRET = generate_secret_key("rlwe-n4096-q56")
PARAMS = SECRET.params
CODEC = FixedPointCodec.for_parameters(PARAMS)
finite_values = st.floats(-8.0, 8.0, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(values=arrays(np.float32, st.integers(1, 300), elements=finite_values),
       weight=st.integers(1, 1000))
def test_encoding_round_trip_is_within_half_a_fixed_point_step(values: np.ndarray,
                                                                 weight: int) -> None:
    update = encode_update(values, weight, CODEC, PARAMS)
    slots = update.slots(0, update.slot_count)
    decoded, total = split_weight(slots, CODEC)
    assert total == weight
    assert np.all(np.abs(decoded / weight - values.astype(np.float64)) <= CODEC.resolution)


@settings(max_examples=15, deadline=None)
@given(data=st.data(), sites=st.integers(1, 6), length=st.integers(1, 5000))
def test_encrypted_fedavg_equals_the_weighted_mean_within_the_codec_resolution(
        data: st.DataObject, sites: int, length: int) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    vectors = [rng.uniform(-8, 8, length).astype(np.float32) for _ in range(sites)]
    weights = [int(w) for w in rng.integers(1, PARAMS.max_site_weight + 1, sites)]
    cts = [encrypt(SECRET, encode_update(v, w, CODEC, PARAMS), layout_hash=LAYOUT,
                   round_number=7) for v, w in zip(vectors, weights, strict=True)]
    result = fedavg(decrypt(SECRET, add(cts)), CODEC)
    weighted = [w * v.astype(np.float64) for v, w in zip(vectors, weights, strict=True)]
    expected = sum(weighted) / sum(weights)
    assert np.all(np.abs(result - expected) <= CODEC.resolution)


def test_boundary_values_at_maximum_weight_from_every_site_do_not_overflow() -> None:
    sites = 40
    extremes = np.array([8.0, -8.0, 0.0, 2.0**-17, -(2.0**-17)], dtype=np.float32)
    cts = [encrypt(SECRET, encode_update(extremes, PARAMS.max_site_weight, CODEC, PARAMS),
                   layout_hash=LAYOUT, round_number=1) for _ in range(sites)]
    sums, total = split_weight(decrypt(SECRET, add(cts)), CODEC)
    assert total == sites * PARAMS.max_site_weight
    assert np.allclose(sums / total, extremes, atol=CODEC.resolution, rtol=0)


def test_default_codecs_fit_their_parameter_sets_for_the_whole_federation() -> None:
    for params in PARAMETER_SETS.values():
        codec = FixedPointCodec.for_parameters(params)
        assert params.max_sites * codec.max_encoded(params.max_site_weight) < (
            params.plaintext_limit)


def test_a_codec_that_could_overflow_the_plaintext_is_refused() -> None:
    with pytest.raises(EncodingError, match="overflow"):
        FixedPointCodec(frac_bits=24, bound=8.0).check_capacity(get_parameters("rlwe-n4096-q56"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 8.001, -9.0])
def test_nan_inf_and_out_of_bound_values_are_refused_naming_the_index(bad: float) -> None:
    values = np.zeros(10, dtype=np.float32)
    values[6] = bad
    with pytest.raises(EncodingError, match="index 6.*nothing was sent"):
        encode_update(values, 5, CODEC, PARAMS)


@pytest.mark.parametrize("extreme", [np.iinfo(np.int64).min, np.iinfo(np.int64).max, -9])
def test_out_of_bound_integers_are_refused_naming_the_index(extreme: int) -> None:
    values = np.zeros(4, dtype=np.int64)
    values[2] = extreme  # abs(INT64_MIN) overflows: it once passed validation
    with pytest.raises(EncodingError, match="index 2.*nothing was sent"):
        encode_update(values, 5, CODEC, PARAMS)


@pytest.mark.parametrize("weight", [0, -3, 1001, 2.5, True])
def test_weights_outside_the_parameter_sets_range_are_refused(weight: object) -> None:
    with pytest.raises(EncodingError, match="weight"):
        encode_update(np.zeros(3, dtype=np.float32), weight, CODEC, PARAMS)  # type: ignore[arg-type]


def test_multidimensional_input_is_refused() -> None:
    with pytest.raises(EncodingError, match="flat vector"):
        encode_update(np.zeros((2, 2), dtype=np.float32), 1, CODEC, PARAMS)
