"""Wrapping the LWE secret per site: only that site, that key id, an intact blob opens it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ucadi.lwe import KeyWrapError, generate_secret_key
from ucadi.lwe.keywrap import (
    SiteKeyPair,
    generate_site_key_pair,
    load_public_key,
    unwrap_secret,
    wrap_secret,
)

SECRET = generate_secret_key()


def test_a_site_unwraps_the_secret_wrapped_for_it() -> None:
    site = generate_site_key_pair()
    blob = wrap_secret(SECRET, "main-campus", site.public_key)
    opened = unwrap_secret(blob, SECRET.key_id, "main-campus", site)
    assert opened.key_id == SECRET.key_id
    assert np.array_equal(opened.coefficients, SECRET.coefficients)


def test_the_wrapped_blob_does_not_contain_the_secret() -> None:
    blob = wrap_secret(SECRET, "main-campus", generate_site_key_pair().public_key)
    assert SECRET.to_bytes()[24:64] not in blob


def test_another_sites_private_key_cannot_open_the_blob() -> None:
    blob = wrap_secret(SECRET, "main-campus", generate_site_key_pair().public_key)
    with pytest.raises(KeyWrapError, match="does not open"):
        unwrap_secret(blob, SECRET.key_id, "main-campus", generate_site_key_pair())


@pytest.mark.parametrize("site,key_id", [("optical-valley", SECRET.key_id),
                                         ("main-campus", bytes(16))],
                         ids=["another-site", "another-key-id"])
def test_a_blob_presented_for_another_site_or_key_id_does_not_open(site: str,
                                                                   key_id: bytes) -> None:
    keys = generate_site_key_pair()
    blob = wrap_secret(SECRET, "main-campus", keys.public_key)
    with pytest.raises(KeyWrapError):
        unwrap_secret(blob, key_id, site, keys)


def test_a_tampered_blob_does_not_open() -> None:
    keys = generate_site_key_pair()
    blob = bytearray(wrap_secret(SECRET, "main-campus", keys.public_key))
    blob[-5] ^= 1
    with pytest.raises(KeyWrapError):
        unwrap_secret(bytes(blob), SECRET.key_id, "main-campus", keys)


def test_site_key_pair_survives_save_and_load(tmp_path: Path) -> None:
    keys = generate_site_key_pair()
    private_path, public_path = keys.save(tmp_path)
    assert private_path.stat().st_mode & 0o077 == 0
    loaded = SiteKeyPair.load(tmp_path)
    blob = wrap_secret(SECRET, "nccid-uk", load_public_key(public_path.read_bytes()))
    assert unwrap_secret(blob, SECRET.key_id, "nccid-uk", loaded).key_id == SECRET.key_id


def test_a_non_x25519_public_key_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(KeyWrapError, match="X25519"):
        load_public_key(pem)
