"""Crypto service over mTLS: key registration/wrapping/rotation and durable summation."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from services.crypto.server import run_crypto_service
from ucadi.lwe import FixedPointCodec, KeyWrapError, PlainSlots, generate_secret_key
from ucadi.lwe.custodian import generate_custodian_key
from ucadi.lwe.integrity import encode_site_update, update_slot_count
from ucadi.lwe.keywrap import generate_site_key_pair, load_public_key, wrap_secret
from ucadi.lwe.stream import decrypt_fedavg_file, decrypt_file, encrypt_to_file
from ucadi.ops.serving import RunningServer, grpc_options
from ucadi.ops.tls import TLSFiles, secure_channel
from ucadi.v1 import crypto_pb2, crypto_pb2_grpc
from ucadi.wire import iter_file_chunks
from ucadi.wire.crypto_client import CryptoServiceError, KeyClient, SumClient

LAYOUT = hashlib.sha256(b"crypto-service-layout").digest()
SITES = ("main-campus", "optical-valley", "sino-french")
CUSTODIAN = generate_custodian_key()


@pytest.fixture()
def crypto_server(tmp_path: Path, federation_pki: Path) -> Iterator[RunningServer]:
    running = run_crypto_service(tmp_path / "state", "127.0.0.1:0",
                                 TLSFiles.from_dir(federation_pki / "crypto"), None)
    yield running
    running.stop(0)


def _channel(server: RunningServer, pki: Path, who: str) -> grpc.Channel:
    return secure_channel(server.target, TLSFiles.from_dir(pki / who),
                          options=tuple(grpc_options()))


def _keys(server: RunningServer, pki: Path, who: str) -> KeyClient:
    return KeyClient(_channel(server, pki, who))


def _sums(server: RunningServer, pki: Path, who: str = "aggregator") -> SumClient:
    return SumClient(_channel(server, pki, who))


def test_sites_register_custodian_wraps_and_each_site_unwraps_its_own_copy(
        crypto_server: RunningServer, federation_pki: Path) -> None:
    site_keys = {site: generate_site_key_pair() for site in SITES}
    for site, pair in site_keys.items():
        assert _keys(crypto_server, federation_pki, site).register_site_key(
            pair.public_pem()).site == site
    custodian = _keys(crypto_server, federation_pki, "custodian")
    registered = custodian.site_keys()
    assert sorted(registered) == sorted(SITES)
    secret = generate_secret_key()
    blobs = {s: wrap_secret(secret, s, load_public_key(pem), CUSTODIAN)
             for s, pem in registered.items()}
    custodian.put_wrapped_keys(secret.key_id_hex, secret.params.name, blobs)
    for site, pair in site_keys.items():
        fetched = _keys(crypto_server, federation_pki, site).fetch_secret(
            site, pair, CUSTODIAN.public_key)
        assert np.array_equal(fetched.coefficients, secret.coefficients)
    aggregator = _keys(crypto_server, federation_pki, "aggregator")
    assert aggregator.site_approved("main-campus")
    assert not aggregator.site_approved("nccid-uk")
    assert not aggregator.site_approved("main-campus", "0" * 32)


def test_the_central_side_cannot_make_a_site_use_a_secret_of_its_own(
        crypto_server: RunningServer, federation_pki: Path, tmp_path: Path) -> None:
    """The central side holds every site's X25519 public key and the key service's files. It
    makes an LWE secret of its own under the active key id, wraps it for the site exactly as the
    custodian would (signed with a key of its own) and writes it over the site's blob in the key
    service's SQLite. Were the site to accept it, the central side would decrypt every upload.
    The site's fetch must refuse it, as it refuses a genuine blob made for another site and an
    old unsigned (version-1) blob; the custodian's own blob still opens."""
    import dataclasses
    import sqlite3

    pair = generate_site_key_pair()
    site = _keys(crypto_server, federation_pki, "main-campus")
    site.register_site_key(pair.public_pem())
    genuine = generate_secret_key()
    _keys(crypto_server, federation_pki, "custodian").put_wrapped_keys(
        genuine.key_id_hex, genuine.params.name,
        {"main-campus": wrap_secret(genuine, "main-campus", pair.public_key, CUSTODIAN)})
    assert site.fetch_secret("main-campus", pair, CUSTODIAN.public_key).key_id == genuine.key_id

    database = tmp_path / "state" / "keys.sqlite"
    with sqlite3.connect(database) as db:
        (site_public,) = db.execute("SELECT public_key_pem FROM site_keys WHERE site = ?",
                                    ("main-campus",)).fetchone()
    chosen = dataclasses.replace(generate_secret_key(), key_id=genuine.key_id)
    forgeries = {
        "its own signing key": wrap_secret(chosen, "main-campus", load_public_key(site_public),
                                           generate_custodian_key()),
        "the custodian's blob for another site": wrap_secret(
            genuine, "optical-valley", load_public_key(site_public), CUSTODIAN),
    }
    signed = wrap_secret(chosen, "main-campus", load_public_key(site_public), CUSTODIAN)
    forgeries["an unsigned version-1 blob"] = b"\x01" + signed[1:-64]
    for how, blob in forgeries.items():
        with sqlite3.connect(database) as db:
            db.execute("UPDATE wrapped_keys SET blob = ? WHERE key_id = ? AND site = ?",
                       (blob, genuine.key_id_hex, "main-campus"))
        with pytest.raises(KeyWrapError) as refused:
            site.fetch_secret("main-campus", pair, CUSTODIAN.public_key)
        assert "custodian" in str(refused.value), how


def test_the_key_service_stores_nothing_that_is_the_secret(
        crypto_server: RunningServer, federation_pki: Path, tmp_path: Path) -> None:
    pair = generate_site_key_pair()
    _keys(crypto_server, federation_pki, "main-campus").register_site_key(pair.public_pem())
    secret = generate_secret_key()
    blob = wrap_secret(secret, "main-campus", pair.public_key, CUSTODIAN)
    _keys(crypto_server, federation_pki, "custodian").put_wrapped_keys(
        secret.key_id_hex, secret.params.name, {"main-campus": blob})
    crypto_server.stop(0)
    packed_secret = secret.to_bytes()[24:]  # the 1 KiB of ternary coefficients
    stored = b"".join(p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file())
    assert blob in stored  # what it holds is the wrapped blob...
    for window in range(0, len(packed_secret) - 32, 32):  # ...and no piece of the secret
        assert packed_secret[window:window + 32] not in stored


def test_roles_are_enforced_from_the_certificate(crypto_server: RunningServer,
                                                 federation_pki: Path, tmp_path: Path) -> None:
    pem = generate_site_key_pair().public_pem()
    with pytest.raises(CryptoServiceError) as denied:
        _keys(crypto_server, federation_pki, "custodian").register_site_key(pem)
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(CryptoServiceError) as denied:
        _keys(crypto_server, federation_pki, "main-campus").site_keys()
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
    # A service that is not the aggregator may not ask where a round stands; a site may (it
    # sees only its own contribution), here of a round never opened.
    for who, code in (("crypto", grpc.StatusCode.PERMISSION_DENIED),
                      ("main-campus", grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(CryptoServiceError) as refused:
            _sums(crypto_server, federation_pki, who).status("fed", 1)
        assert refused.value.code == code, refused.value
    # A site may send its own ciphertext (here to a round never opened), never another's.
    site = _sums(crypto_server, federation_pki, "main-campus")
    (tmp_path / "update.ct").write_bytes(b"not read before the caller is checked")
    for named, code in (("nccid-uk", grpc.StatusCode.PERMISSION_DENIED),
                        ("main-campus", grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(CryptoServiceError) as refused:
            site.add_contribution("fed", 1, named, tmp_path / "update.ct")
        assert refused.value.code == code, refused.value


def test_rotation_activates_a_new_key_id_and_keeps_the_old_one_fetchable(
        crypto_server: RunningServer, federation_pki: Path) -> None:
    pair = generate_site_key_pair()
    site = _keys(crypto_server, federation_pki, "nccid-uk")
    site.register_site_key(pair.public_pem())
    custodian = _keys(crypto_server, federation_pki, "custodian")
    old, new = generate_secret_key(), generate_secret_key("rlwe-n4096-q64")
    for secret in (old, new):
        custodian.put_wrapped_keys(secret.key_id_hex, secret.params.name,
                                   {"nccid-uk": wrap_secret(secret, "nccid-uk", pair.public_key,
                                                            CUSTODIAN)})
    assert site.active_key() == (new.key_id_hex, "rlwe-n4096-q64")
    assert site.fetch_secret("nccid-uk", pair, CUSTODIAN.public_key).key_id == new.key_id
    assert site.fetch_secret("nccid-uk", pair, CUSTODIAN.public_key,
                             old.key_id_hex).key_id == old.key_id


def test_wrapping_for_an_unregistered_site_is_refused(crypto_server: RunningServer,
                                                      federation_pki: Path) -> None:
    secret = generate_secret_key()
    blob = wrap_secret(secret, "nowhere", generate_site_key_pair().public_key, CUSTODIAN)
    with pytest.raises(CryptoServiceError) as refused:
        _keys(crypto_server, federation_pki, "custodian").put_wrapped_keys(
            secret.key_id_hex, secret.params.name, {"nowhere": blob})
    assert refused.value.code == grpc.StatusCode.NOT_FOUND


def _open(client: SumClient, secret_key_id: str, slot_count: int, round_number: int = 1) -> None:
    client.open_round("fed", round_number, key_id=secret_key_id, parameter_set="rlwe-n4096-q56",
                      layout_hash=LAYOUT, slot_count=slot_count)


def test_round_sums_accepted_contributions_and_refuses_duplicates_mismatches_and_corruption(
        crypto_server: RunningServer, federation_pki: Path, tmp_path: Path) -> None:
    secret = generate_secret_key()
    codec = FixedPointCodec.for_parameters(secret.params)
    rng = np.random.default_rng(3)
    vectors = {s: rng.uniform(-2, 2, 20_000).astype(np.float32) for s in SITES}
    weights = {"main-campus": 5, "optical-valley": 3, "sino-french": 2}
    client = _sums(crypto_server, federation_pki)
    _open(client, secret.key_id_hex, update_slot_count(20_000))
    for site in SITES:
        path = tmp_path / f"{site}.ct"
        encrypt_to_file(path, secret, encode_site_update(vectors[site], weights[site], codec,
                                                         secret, 1, site), layout_hash=LAYOUT,
                        round_number=1)
        assert client.add_contribution("fed", 1, site, path).site == site

    def refused(path: Path, site: str) -> grpc.StatusCode:
        with pytest.raises(CryptoServiceError) as error:
            client.add_contribution("fed", 1, site, path)
        return error.value.code

    assert refused(tmp_path / "main-campus.ct", "main-campus") == grpc.StatusCode.ALREADY_EXISTS
    other_layout = tmp_path / "other.ct"
    encrypt_to_file(other_layout, secret, encode_site_update(vectors["main-campus"], 1, codec,
                                                             secret, 1, "nccid-uk"),
                    layout_hash=hashlib.sha256(b"x").digest(), round_number=1)
    assert refused(other_layout, "nccid-uk") == grpc.StatusCode.FAILED_PRECONDITION
    corrupt = tmp_path / "corrupt.ct"
    data = bytearray((tmp_path / "sino-french.ct").read_bytes())
    data[1000] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    assert refused(corrupt, "nccid-uk") == grpc.StatusCode.INVALID_ARGUMENT
    assert list(client.status("fed", 1).sites) == sorted(SITES)
    own = _sums(crypto_server, federation_pki, "sino-french").status("fed", 1)
    assert list(own.sites) == ["sino-french"], "a site sees its own contribution only"
    assert list(own.sha256) == [hashlib.sha256((tmp_path / "sino-french.ct").read_bytes())
                                .hexdigest()]
    assert list(_sums(crypto_server, federation_pki, "nccid-uk").status("fed", 1).sites) == []
    # The aggregator checking one site's contribution asks for that site's only (issue 25:
    # one row, not every site's, per recorded upload); a site cannot ask for another's.
    one = client.status("fed", 1, "sino-french")
    assert (list(one.sites), list(one.sha256)) == (list(own.sites), list(own.sha256))
    assert client.contribution_digest("fed", 1, "main-campus") == hashlib.sha256(
        (tmp_path / "main-campus.ct").read_bytes()).hexdigest()
    assert client.contribution_digest("fed", 1, "nccid-uk") is None
    assert list(_sums(crypto_server, federation_pki, "nccid-uk").status(
        "fed", 1, "sino-french").sites) == []
    late = tmp_path / "nccid-uk.ct"
    encrypt_to_file(late, secret, encode_site_update(vectors["main-campus"], 1, codec, secret, 1,
                                                     "nccid-uk"),
                    layout_hash=LAYOUT, round_number=1)

    total = client.seal("fed", 1, tmp_path / "sum.ct")
    average, weight = decrypt_fedavg_file(secret, total, codec)
    expected = sum(weights[s] * vectors[s].astype(np.float64) for s in SITES) / 10
    assert weight == 10 and np.abs(average - expected).max() <= codec.resolution + 1e-6
    assert refused(late, "nccid-uk") == grpc.StatusCode.FAILED_PRECONDITION  # round sealed


def test_accepted_contributions_survive_a_restart(tmp_path: Path, federation_pki: Path) -> None:
    secret = generate_secret_key()
    tls = TLSFiles.from_dir(federation_pki / "crypto")
    plains = {s: np.arange(5000) * (i + 1) for i, s in enumerate(SITES)}
    for site in SITES:
        encrypt_to_file(tmp_path / f"{site}.ct", secret, PlainSlots(plains[site]),
                        layout_hash=LAYOUT, round_number=1)
    first = run_crypto_service(tmp_path / "state", "127.0.0.1:0", tls, None)
    client = _sums(first, federation_pki)
    _open(client, secret.key_id_hex, 5000)
    for site in SITES[:2]:
        client.add_contribution("fed", 1, site, tmp_path / f"{site}.ct")
    first.stop(0)
    stray = tmp_path / "state" / "sums" / "rounds" / "fed" / "1" / "sum-9-deadbeef.ct"
    stray.write_bytes(b"complete sum of a crashed add, never committed")
    partial = stray.with_name("sum-9-deadbeef.ct.partial")
    partial.write_bytes(b"half-written sum")
    second = run_crypto_service(tmp_path / "state", "127.0.0.1:0", tls, None)
    try:
        client = _sums(second, federation_pki)
        assert list(client.status("fed", 1).sites) == sorted(SITES[:2])
        assert not stray.exists() and not partial.exists()
        client.add_contribution("fed", 1, SITES[2], tmp_path / f"{SITES[2]}.ct")
        total = client.seal("fed", 1, tmp_path / "sum.ct")
        assert np.array_equal(decrypt_file(secret, total), sum(plains.values()))
    finally:
        second.stop(0)


def test_a_contribution_streamed_as_it_arrives_counts_on_commit_and_not_on_abort(
        tmp_path: Path, crypto_server: RunningServer, federation_pki: Path) -> None:
    secret = generate_secret_key()
    client = _sums(crypto_server, federation_pki)
    _open(client, secret.key_id_hex, 5000)
    plains = {s: np.arange(5000) * (i + 1) for i, s in enumerate(SITES)}
    for site in SITES:
        encrypt_to_file(tmp_path / f"{site}.ct", secret, PlainSlots(plains[site]),
                        layout_hash=LAYOUT, round_number=1)

    # The aggregator refuses an upload after its last byte, which the service already has:
    # gRPC may deliver the cancellation as a normal end of stream (found by `make chaos`:
    # about 1 abort in 5 was added), so only the commit message adds a contribution.
    for _ in range(10):
        aborted = client.stream_contribution("fed", 1, SITES[0])
        for chunk in iter_file_chunks(tmp_path / f"{SITES[0]}.ct", chunk_bytes=4096):
            aborted.send(chunk)
        time.sleep(0.2)  # every byte has reached the service
        aborted.abort()
    time.sleep(0.5)
    assert list(client.status("fed", 1).sites) == []
    unfinished = iter([crypto_pb2.ContributionMessage(metadata=crypto_pb2.ContributionMetadata(
        federation="fed", round=1, site=SITES[0])), *(
        crypto_pb2.ContributionMessage(chunk=c)
        for c in iter_file_chunks(tmp_path / f"{SITES[0]}.ct"))])
    with pytest.raises(grpc.RpcError) as refused:
        crypto_pb2_grpc.SumServiceStub(_channel(crypto_server, federation_pki, "aggregator")
                                       ).AddContribution(unfinished)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "without its commit message" in refused.value.details()

    for site in SITES:
        streamed = client.stream_contribution("fed", 1, site)
        for chunk in iter_file_chunks(tmp_path / f"{site}.ct", chunk_bytes=4096):
            streamed.send(chunk)
        assert streamed.commit().site == site
    replayed = client.stream_contribution("fed", 1, SITES[0])
    for chunk in iter_file_chunks(tmp_path / f"{SITES[0]}.ct"):
        replayed.send(chunk)
    with pytest.raises(CryptoServiceError) as error:
        replayed.commit()
    assert error.value.code == grpc.StatusCode.ALREADY_EXISTS
    total = client.seal("fed", 1, tmp_path / "sum.ct")
    assert np.array_equal(decrypt_file(secret, total), sum(plains.values()))


def test_a_site_cannot_replace_its_key_until_the_custodian_approves_the_new_one(
        crypto_server: RunningServer, federation_pki: Path) -> None:
    from ucadi.lwe.keywrap import fingerprint

    site = _keys(crypto_server, federation_pki, "main-campus")
    first, second = generate_site_key_pair(), generate_site_key_pair()
    site.register_site_key(first.public_pem())
    site.register_site_key(first.public_pem())  # the same key again: fine
    with pytest.raises(CryptoServiceError) as refused:
        site.register_site_key(second.public_pem())
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert fingerprint(first.public_pem()) in str(refused.value)
    assert fingerprint(second.public_pem()) in str(refused.value)
    custodian = _keys(crypto_server, federation_pki, "custodian")
    assert custodian.site_keys()["main-campus"] == first.public_pem()
    with pytest.raises(CryptoServiceError) as denied:
        site.approve_site_key("main-campus", fingerprint(second.public_pem()))
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
    custodian.approve_site_key("main-campus", fingerprint(second.public_pem()))
    site.register_site_key(second.public_pem())
    assert custodian.site_keys()["main-campus"] == second.public_pem()
    with pytest.raises(CryptoServiceError):  # an approval is used once
        site.register_site_key(first.public_pem())
