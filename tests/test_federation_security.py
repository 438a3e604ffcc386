"""Who may talk to the federation, and what it refuses: certificates, identities, bad updates.
Real aggregator and crypto processes; the federation keeps going after every refusal."""

from __future__ import annotations

import hashlib
import socket

import grpc
import numpy as np
import pytest
from federation_probe import ProbeSite

from ucadi.demo.federation import FederationPlan, LocalFederation
from ucadi.errors import UcadiError
from ucadi.lwe import EncodingError
from ucadi.ops.pki import create_ca, issue_certificate
from ucadi.ops.tls import secure_channel
from ucadi.v1 import common_pb2, crypto_pb2, crypto_pb2_grpc, federation_pb2, federation_pb2_grpc
from ucadi.wire.crypto_client import CryptoServiceError, SumClient

pytestmark = pytest.mark.slow
SITES = ["main-campus", "optical-valley"]
# The test itself acts as this (certified, approved) site to send bad updates.
PROBE = "sino-french"


@pytest.fixture(scope="module")
def federation(tmp_path_factory, tiny_cohort):
    root = tmp_path_factory.mktemp("secure-fed")
    # The shared-key mode: the probe's bad uploads skip the masking phases.
    plan = FederationPlan(root=root, manifest=tiny_cohort, sites=[*SITES, PROBE], rounds=2,
                          min_sites=2, recipe={"total_epochs": 2, "warmup_epochs": 1},
                          pairwise_masks=False)
    fed = LocalFederation(plan)
    fed.provision()
    fed.create_key()
    fed.start_crypto()
    fed.start_aggregator()
    yield fed
    fed.stop()


def stub_for(federation: LocalFederation, identity: str):
    channel = secure_channel(federation.processes["aggregator"].target, federation.tls(identity))
    return federation_pb2_grpc.FederationServiceStub(channel), channel


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as failure:
        call()
    return failure.value.code()


def upload_requests(header, payload: bytes):
    yield federation_pb2.UploadUpdateRequest(header=header)
    yield federation_pb2.UploadUpdateRequest(chunk=common_pb2.Chunk(
        offset=0, data=payload, total_size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest()))


def test_client_with_a_certificate_from_another_ca_cannot_connect(federation, tmp_path):
    create_ca(tmp_path / "rogue-ca", "rogue")
    impostor = issue_certificate(tmp_path / "rogue-ca", tmp_path / "impostor", "main-campus",
                                 "site")
    channel = secure_channel(federation.processes["aggregator"].target, impostor)
    stub = federation_pb2_grpc.FederationServiceStub(channel)
    assert code_of(lambda: stub.Join(federation_pb2.JoinRequest(), timeout=10)) == \
        grpc.StatusCode.UNAVAILABLE
    channel.close()


def test_roles_are_enforced_from_the_certificate(federation):
    stub, channel = stub_for(federation, "crypto")
    assert code_of(lambda: stub.Join(federation_pb2.JoinRequest(), timeout=10)) == \
        grpc.StatusCode.PERMISSION_DENIED
    channel.close()
    keys_channel = secure_channel(federation.processes["crypto"].target,
                                  federation.tls("main-campus"))
    keys = crypto_pb2_grpc.KeyServiceStub(keys_channel)
    assert code_of(lambda: keys.ListSiteKeys(crypto_pb2.ListSiteKeysRequest(), timeout=10)) == \
        grpc.StatusCode.PERMISSION_DENIED
    keys_channel.close()


def test_site_without_a_wrapped_key_cannot_join(federation):
    stub, channel = stub_for(federation, "optical-valley")
    assert code_of(lambda: stub.Join(federation_pb2.JoinRequest(), timeout=10)) == \
        grpc.StatusCode.FAILED_PRECONDITION
    channel.close()


def test_a_single_node_aggregator_still_asks_the_key_service_who_may_join(federation, tmp_path):
    from services.aggregator.config import DEFAULTS, build_federation_config
    from services.aggregator.crypto_backend import connect_crypto
    from services.aggregator.local_backend import LocalSumBackend
    from services.aggregator.store import AggregatorStore
    from ucadi.ops.config import load_config

    config = load_config(DEFAULTS, federation.aggregator_config())
    config["server"].update(crypto_address="", key_address=federation.processes["crypto"].target)
    fed_config = build_federation_config(config)
    store = AggregatorStore(tmp_path / "state")
    tls = federation.tls("aggregator")
    backend, _, approved = connect_crypto(config, tls, store, fed_config)
    assert isinstance(backend, LocalSumBackend)
    assert approved("optical-valley") is False  # no wrapped key for it yet
    config["server"]["key_address"] = ""
    with pytest.raises(UcadiError, match="key_address"):
        connect_crypto(config, tls, store, fed_config)


def _sum_status(federation: LocalFederation, fed_id: str, round_number: int):
    channel = secure_channel(federation.processes["crypto"].target, federation.tls("aggregator"))
    try:
        return SumClient(channel).status(fed_id, round_number)
    finally:
        channel.close()


def test_bad_updates_are_refused_and_the_round_still_completes(federation, tmp_path, caplog):
    # The probe joins first, so round 1 cannot seal without it: it is expected in every round.
    probe = ProbeSite(federation, PROBE)
    for site in SITES:
        federation.start_trainer(site)
    federation.approve_sites(SITES)
    federation.wait_for(lambda s: s.current.round == 1, timeout=120, poll_s=0.2)
    send, header = probe.send, probe.header
    garbage = b"\x00" * 4096
    assert code_of(lambda: send(header(), garbage)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: send(header(total_size=1 << 40, sha256="0" * 64), garbage)) == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code_of(lambda: send(header(key_id="ff" * 16), garbage)) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: send(header(round=7), garbage)) == \
        grpc.StatusCode.FAILED_PRECONDITION
    # Trained under another optimiser configuration than the federation announced.
    assert code_of(lambda: send(header(optimizer_digest="ab" * 32), garbage)) == \
        grpc.StatusCode.INVALID_ARGUMENT
    # The aggregator logs each refusal as one line: who, why, and the message the site got.
    logged = federation.processes["aggregator"].log_path.read_text()
    assert f"refused an upload from {PROBE} (wrong_round): round 7 is not open" in logged
    assert logged.count(f"refused an upload from {PROBE} (") == 5
    assert "optimizer digest 'abab" in logged
    with pytest.raises(EncodingError):
        probe.cipher.encrypt_to_file(np.array([0.1, np.nan]), weight=8, round_number=1,
                                     layout_hash=header().layout_hash, path=tmp_path / "nan",
                                     site=PROBE)
    assert not (tmp_path / "nan").exists(), "nothing is produced from a NaN update"
    first = probe.encrypted_update(1, tmp_path / "r1.lwe")
    own = probe.encrypted_update(1, tmp_path / "own.lwe")  # the same update, fresh randomness
    fed_id = probe.joined.federation_id
    assert probe.joined.contribute_to_sum, "one sum service: sites send ciphertexts there"
    sums_channel = secure_channel(federation.processes["crypto"].target, federation.tls(PROBE))
    sums = SumClient(sums_channel)
    with pytest.raises(CryptoServiceError) as posing:
        sums.add_contribution(fed_id, 1, "main-campus", tmp_path / "own.lwe")
    assert posing.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: probe.record(header(contributed=True), own)) == \
        grpc.StatusCode.FAILED_PRECONDITION, "recorded before the sum service holds it"
    assert code_of(lambda: send(header(contributed=True), own)) == \
        grpc.StatusCode.INVALID_ARGUMENT, "a recorded upload carries no chunks"
    sums.add_contribution(fed_id, 1, PROBE, tmp_path / "own.lwe")
    assert code_of(lambda: probe.record(header(contributed=True, base_version=3), own)) == \
        grpc.StatusCode.FAILED_PRECONDITION, "the aggregator still validates the header"
    with pytest.raises(grpc.RpcError) as other:
        probe.record(header(contributed=True), first)
    assert other.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already holds another ciphertext" in other.value.details()
    # The upload the aggregator accepts replaces the one the probe sent itself.
    receipt = send(header(), first)
    assert receipt.site == PROBE, "the identity comes from the certificate"
    assert code_of(lambda: send(header(), first)) == grpc.StatusCode.ALREADY_EXISTS
    federation.wait_for(lambda s: s.current.round == 2, timeout=300, poll_s=0.3)
    held = _sum_status(federation, fed_id, 1)
    assert dict(zip(held.sites, held.sha256, strict=True))[PROBE] == \
        hashlib.sha256(first).hexdigest()
    # Version 1 as a site fetches it from the sum service, and as the aggregator serves it.
    fetched = b"".join(c.data for c in sums.sum_chunks(fed_id, 1))
    served = b"".join(c.data for c in probe.stub.DownloadGlobal(
        federation_pb2.DownloadGlobalRequest(version=1), timeout=60))
    assert fetched == served and len(fetched) > 0
    assert code_of(lambda: list(sums.sum_chunks(fed_id, 2))) == \
        grpc.StatusCode.FAILED_PRECONDITION, "an open round has no sum to fetch"
    other_channel = secure_channel(federation.processes["crypto"].target,
                                   federation.tls("crypto"))
    assert code_of(lambda: list(SumClient(other_channel).sum_chunks(fed_id, 1))) == \
        grpc.StatusCode.PERMISSION_DENIED, "services other than the aggregator may not"
    other_channel.close()
    assert code_of(lambda: send(header(round=2, base_version=1), first)) == \
        grpc.StatusCode.ALREADY_EXISTS, "a replayed ciphertext is refused"
    second = probe.encrypted_update(2, tmp_path / "r2.lwe")
    sums.add_contribution(fed_id, 2, PROBE, tmp_path / "r2.lwe")
    assert probe.record(header(round=2, base_version=1, contributed=True), second).site == PROBE
    sums_channel.close()
    status = federation.wait_for(
        lambda s: s.current.state == federation_pb2.ROUND_STATE_COMPLETED, timeout=300)
    assert [sorted(r.uploaded_sites) for r in status.rounds] == [sorted([*SITES, PROBE])] * 2
    probe.close()
    _download_from_the_aggregator_when_the_sum_service_is_unreachable(federation, tmp_path,
                                                                     caplog)

def _download_from_the_aggregator_when_the_sum_service_is_unreachable(federation, tmp_path,
                                                                     caplog) -> None:
    from services.trainer.client import FederationClient

    unreachable = socket.socket()
    unreachable.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    client = FederationClient(federation.processes["aggregator"].target, federation.tls(PROBE),
                              retry_budget_s=30,
                              sum_target=f"127.0.0.1:{unreachable.getsockname()[1]}")
    reachable = FederationClient(federation.processes["aggregator"].target,
                                 federation.tls(PROBE),
                                 sum_target=federation.processes["crypto"].target)
    try:
        assert client.join(8, "test").contribute_to_sum and reachable.join(8, "test")
        fallback = client.download_global(1, tmp_path / "from-aggregator.lwe", 1 << 30)
        direct = reachable.download_global(1, tmp_path / "from-sum.lwe", 1 << 30)
        assert fallback.trailer_ok and direct.trailer_ok
        assert fallback.path.read_bytes() == direct.path.read_bytes()
        assert caplog.text.count("downloading it from the aggregator") == 1
    finally:
        client.close()
        reachable.close()
        unreachable.close()
