"""Wrapping the LWE secret per site: only that site, that key id, an intact blob opens it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ucadi.lwe import KeyWrapError, generate_secret_key
from ucadi.lwe.custodian import CustodianKey, custodian_public_key, generate_custodian_key
from ucadi.lwe.keywrap import (
    SiteKeyPair,
    generate_site_key_pair,
    load_public_key,
    unwrap_secret,
    wrap_secret,
)

SECRET = generate_secret_key()
CUSTODIAN = generate_custodian_key()


def test_a_site_unwraps_the_secret_wrapped_for_it() -> None:
    site = generate_site_key_pair()
    blob = wrap_secret(SECRET, "main-campus", site.public_key, CUSTODIAN)
    opened = unwrap_secret(blob, SECRET.key_id, "main-campus", site, CUSTODIAN.public_key)
    assert opened.key_id == SECRET.key_id
    assert np.array_equal(opened.coefficients, SECRET.coefficients)


def test_the_wrapped_blob_does_not_contain_the_secret() -> None:
    blob = wrap_secret(SECRET, "main-campus", generate_site_key_pair().public_key, CUSTODIAN)
    assert SECRET.to_bytes()[24:64] not in blob


def test_another_sites_private_key_cannot_open_the_blob() -> None:
    blob = wrap_secret(SECRET, "main-campus", generate_site_key_pair().public_key, CUSTODIAN)
    with pytest.raises(KeyWrapError, match="does not open"):
        unwrap_secret(blob, SECRET.key_id, "main-campus", generate_site_key_pair(),
                      CUSTODIAN.public_key)


@pytest.mark.parametrize("site,key_id", [("optical-valley", SECRET.key_id),
                                         ("main-campus", bytes(16))],
                         ids=["another-site", "another-key-id"])
def test_a_blob_presented_for_another_site_or_key_id_does_not_open(site: str,
                                                                   key_id: bytes) -> None:
    keys = generate_site_key_pair()
    blob = wrap_secret(SECRET, "main-campus", keys.public_key, CUSTODIAN)
    with pytest.raises(KeyWrapError):
        unwrap_secret(blob, key_id, site, keys, CUSTODIAN.public_key)


def test_a_tampered_blob_does_not_open() -> None:
    keys = generate_site_key_pair()
    blob = bytearray(wrap_secret(SECRET, "main-campus", keys.public_key, CUSTODIAN))
    blob[-5] ^= 1
    with pytest.raises(KeyWrapError):
        unwrap_secret(bytes(blob), SECRET.key_id, "main-campus", keys, CUSTODIAN.public_key)


def test_site_key_pair_survives_save_and_load(tmp_path: Path) -> None:
    keys = generate_site_key_pair()
    private_path, public_path = keys.save(tmp_path)
    assert private_path.stat().st_mode & 0o077 == 0
    loaded = SiteKeyPair.load(tmp_path)
    blob = wrap_secret(SECRET, "nccid-uk", load_public_key(public_path.read_bytes()), CUSTODIAN)
    opened = unwrap_secret(blob, SECRET.key_id, "nccid-uk", loaded, CUSTODIAN.public_key)
    assert opened.key_id == SECRET.key_id


def test_a_non_x25519_public_key_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(KeyWrapError, match="X25519"):
        load_public_key(pem)


def test_a_blob_signed_by_anyone_but_the_configured_custodian_does_not_open() -> None:
    keys = generate_site_key_pair()
    blob = wrap_secret(SECRET, "main-campus", keys.public_key, generate_custodian_key())
    with pytest.raises(KeyWrapError, match="not signed by the configured key custodian"):
        unwrap_secret(blob, SECRET.key_id, "main-campus", keys, CUSTODIAN.public_key)


def test_custodian_key_survives_save_and_load_and_its_public_hex_parses(tmp_path: Path) -> None:
    private_path, public_path = CUSTODIAN.save(tmp_path)
    assert private_path.stat().st_mode & 0o077 == 0
    assert CustodianKey.load(tmp_path).public_hex() == CUSTODIAN.public_hex()
    parsed = custodian_public_key(public_path.read_text())
    keys = generate_site_key_pair()
    blob = wrap_secret(SECRET, "main-campus", keys.public_key, CustodianKey.load(tmp_path))
    assert unwrap_secret(blob, SECRET.key_id, "main-campus", keys, parsed).key_id == SECRET.key_id


@pytest.mark.parametrize("text", ["", "xyz", "ab" * 31, "ab" * 33], ids=["empty", "not-hex",
                                                                         "short", "long"])
def test_a_malformed_custodian_key_is_refused_naming_what_is_accepted(text: str) -> None:
    with pytest.raises(KeyWrapError, match="64 hex digits"):
        custodian_public_key(text)


def test_a_missing_or_wrong_kind_of_key_file_names_the_command_that_makes_one(
        tmp_path: Path) -> None:
    with pytest.raises(KeyWrapError, match="ucadi keys custodian-init"):
        CustodianKey.load(tmp_path)
    generate_site_key_pair().save(tmp_path)
    (tmp_path / "custodian_ed25519.key").write_bytes((tmp_path / "site_x25519.key").read_bytes())
    with pytest.raises(KeyWrapError, match="not an Ed25519 private key"):
        CustodianKey.load(tmp_path)
