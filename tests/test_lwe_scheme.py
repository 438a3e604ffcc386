"""The ring-LWE scheme: exact ring products, exact sums, negative values, noise bound, keys."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ucadi.lwe import (
    CiphertextMismatchError,
    DuplicateContributionError,
    EncodingError,
    PlainSlots,
    add,
    decrypt,
    encrypt,
    from_bytes,
    generate_secret_key,
    get_parameters,
    to_bytes,
)
from ucadi.lwe.params import DEFAULT_PARAMETER_SET, ERROR_ETA, PARAMETER_SETS
from ucadi.lwe.ring import multiply_by_secret, multiply_by_secret_reference, secret_spectrum
from ucadi.lwe.sampling import ErrorSampler, expand_uniform, sample_ternary
from ucadi.lwe.scheme import decode_phase

LAYOUT = hashlib.sha256(b"test-layout").digest()
SECRETS = {name: generate_secret_key(name) for name in PARAMETER_SETS}
SECRET = SECRETS["rlwe-n4096-q56"]


@settings(max_examples=40, deadline=None)
@given(log_n=st.integers(2, 7), modulus_bits=st.sampled_from([8, 24, 56, 64]),
       seed=st.integers(0, 2**32 - 1))
def test_fft_ring_product_equals_schoolbook_reference(log_n: int, modulus_bits: int,
                                                      seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 1 << log_n
    secret = rng.integers(-1, 2, n).astype(np.int8)
    a = rng.integers(0, 2**64 - 1, (3, n), dtype=np.uint64, endpoint=True)
    if modulus_bits < 64:
        a &= np.uint64((1 << modulus_bits) - 1)
    fast = multiply_by_secret(a, secret_spectrum(secret), modulus_bits)
    for row in range(3):
        assert np.array_equal(fast[row], multiply_by_secret_reference(a[row], secret,
                                                                      modulus_bits))


@pytest.mark.parametrize("secret_kind", ["random", "all-ones", "alternating"])
@pytest.mark.parametrize("modulus_bits", [56, 64])
def test_fft_ring_product_is_exact_at_full_ring_degree_even_for_adversarial_inputs(
        secret_kind: str, modulus_bits: int) -> None:
    secret = {"random": SECRET.coefficients, "all-ones": np.ones(4096, dtype=np.int8),
              "alternating": np.tile(np.array([1, -1], dtype=np.int8), 2048)}[secret_kind]
    a = np.empty((2, 4096), dtype=np.uint64)
    a[0] = expand_uniform(b"\x07" * 32, 0, 1, 4096, modulus_bits)[0]
    a[1] = (1 << modulus_bits) - 1  # every limb at its maximum: the largest FFT magnitudes
    fast = multiply_by_secret(a, secret_spectrum(secret), modulus_bits)
    for row in range(2):
        assert np.array_equal(fast[row], multiply_by_secret_reference(a[row], secret,
                                                                      modulus_bits))


def test_every_parameter_set_is_within_the_he_standard_row_and_has_an_exact_noise_bound() -> None:
    for params in PARAMETER_SETS.values():
        assert params.ring_degree == 4096 and params.modulus_bits <= 109
        assert params.max_sites >= 64
        assert params.max_sites * ERROR_ETA < params.worst_case_noise < params.delta // 2
    assert get_parameters(DEFAULT_PARAMETER_SET).max_sites >= 1000


@settings(max_examples=25, deadline=None)
@given(data=st.data(), sites=st.integers(1, 12), length=st.integers(1, 9000),
       name=st.sampled_from(sorted(PARAMETER_SETS)))
def test_sum_of_ciphertexts_decrypts_exactly_to_sum_of_plaintexts(
        data: st.DataObject, sites: int, length: int, name: str) -> None:
    secret = SECRETS[name]
    # One site's share: any sum of up to max_sites stays representable (encrypt enforces it).
    limit = secret.params.plaintext_limit // secret.params.max_sites
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    plains = [rng.integers(-limit, limit, length) for _ in range(sites)]
    cts = [encrypt(secret, PlainSlots(p), layout_hash=LAYOUT, round_number=3) for p in plains]
    assert np.array_equal(decrypt(secret, add(cts)), np.sum(plains, axis=0))


@pytest.mark.parametrize("name", sorted(PARAMETER_SETS))
def test_max_sites_sum_exactly_including_extreme_negative_and_positive_slots(name: str) -> None:
    secret = SECRETS[name]  # the default set takes a thousand sites, the compact one 64
    params = secret.params
    per_site = params.plaintext_limit // params.max_sites
    plain = np.array([per_site - 1, -per_site, 0, 1, -1], dtype=np.int64)
    # As sent: each contribution and the sum rounded to their stored widths (params.py).
    cts = [from_bytes(to_bytes(encrypt(secret, PlainSlots(plain), layout_hash=LAYOUT,
                                       round_number=0)))
           for _ in range(params.max_sites)]
    total = from_bytes(to_bytes(add(cts)))
    assert total.header.dropped_bits == params.sum_drop_bits
    assert np.array_equal(decrypt(secret, total), plain * params.max_sites)


def test_decoding_is_exact_under_the_worst_case_summed_noise() -> None:
    params = SECRET.params
    m = np.array([0, 1, -1, params.plaintext_limit - 1, -params.plaintext_limit], dtype=np.int64)
    for noise in (params.worst_case_noise, -params.worst_case_noise, params.delta // 2 - 1,
                  -(params.delta // 2 - 1)):
        phase = (m.view(np.uint64) << np.uint64(params.delta_bits)) + np.uint64(
            noise % (1 << 64))
        phase &= np.uint64(params.modulus_mask)
        assert np.array_equal(decode_phase(phase, params), m)


def test_errors_are_bounded_centred_and_have_the_standard_deviation_of_the_security_table() -> None:
    errors = ErrorSampler().sample((400_000,))
    assert np.abs(errors).max() <= ERROR_ETA
    assert abs(errors.mean()) < 0.05
    assert 3.1 < errors.std() < 3.4


def test_secret_is_ternary_and_roughly_uniform() -> None:
    s = sample_ternary(4096)
    counts = np.bincount(s + 1, minlength=3)
    assert set(np.unique(s)) <= {-1, 0, 1} and counts.min() > 1200


def test_two_encryptions_of_the_same_vector_share_neither_seed_nor_body() -> None:
    plain = PlainSlots(np.arange(100))
    first = encrypt(SECRET, plain, layout_hash=LAYOUT, round_number=1)
    second = encrypt(SECRET, plain, layout_hash=LAYOUT, round_number=1)
    assert first.seeds != second.seeds
    assert not np.array_equal(first.body, second.body)


def test_decrypting_with_another_key_id_is_refused() -> None:
    ct = encrypt(SECRET, PlainSlots(np.arange(10)), layout_hash=LAYOUT, round_number=1)
    other = generate_secret_key(SECRET.params.name)
    with pytest.raises(CiphertextMismatchError, match="key"):
        decrypt(other, ct)


@pytest.mark.parametrize("field,value", [
    ("round_number", 2), ("layout_hash", hashlib.sha256(b"other").digest()),
])
def test_ciphertexts_of_different_rounds_or_layouts_are_not_added(field: str, value: object
                                                                  ) -> None:
    base = encrypt(SECRET, PlainSlots(np.arange(10)), layout_hash=LAYOUT, round_number=1)
    kwargs = {"layout_hash": LAYOUT, "round_number": 1, field: value}
    other = encrypt(SECRET, PlainSlots(np.arange(10)), **kwargs)
    with pytest.raises(CiphertextMismatchError, match=field):
        add([base, other])


def test_ciphertexts_under_different_keys_or_lengths_are_not_added() -> None:
    base = encrypt(SECRET, PlainSlots(np.arange(10)), layout_hash=LAYOUT, round_number=1)
    other_key = encrypt(generate_secret_key(), PlainSlots(np.arange(10)), layout_hash=LAYOUT,
                        round_number=1)
    longer = encrypt(SECRET, PlainSlots(np.arange(11)), layout_hash=LAYOUT, round_number=1)
    with pytest.raises(CiphertextMismatchError, match="key_id"):
        add([base, other_key])
    with pytest.raises(CiphertextMismatchError, match="slot_count"):
        add([base, longer])


def test_the_same_ciphertext_is_not_added_twice() -> None:
    ct = encrypt(SECRET, PlainSlots(np.arange(10)), layout_hash=LAYOUT, round_number=1)
    with pytest.raises(DuplicateContributionError):
        add([ct, ct])


def test_plaintext_slots_outside_the_plaintext_space_are_refused() -> None:
    limit = SECRET.params.plaintext_limit
    with pytest.raises(EncodingError, match="plaintext slots"):
        encrypt(SECRET, PlainSlots(np.array([0, limit])), layout_hash=LAYOUT, round_number=1)


def test_raw_slots_beyond_one_sites_share_are_refused_so_no_sum_wraps() -> None:
    share = SECRET.params.plaintext_limit // SECRET.params.max_sites
    encrypt(SECRET, PlainSlots(np.array([share - 1, -share])), layout_hash=LAYOUT,
            round_number=1)
    for value in (share, -share - 1):
        with pytest.raises(EncodingError, match="must not wrap"):
            encrypt(SECRET, PlainSlots(np.array([0, value])), layout_hash=LAYOUT,
                    round_number=1)


def test_unknown_parameter_set_names_the_known_ones() -> None:
    with pytest.raises(Exception, match="rlwe-n4096-q56"):
        get_parameters("rlwe-n1024-q27")
