"""One trace spans a site's upload, the aggregator and the crypto service's summation."""

from __future__ import annotations

import time

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.aggregator.config import DEFAULTS
from services.aggregator.server import start_aggregator
from services.crypto.server import run_crypto_service
from services.trainer.cipher import SiteCipher
from services.trainer.client import FederationClient
from ucadi.learn.server_opt import announced_optimization
from ucadi.lwe import generate_secret_key
from ucadi.lwe.custodian import generate_custodian_key
from ucadi.lwe.keywrap import generate_site_key_pair, wrap_secret
from ucadi.model.layout import ParameterLayout, initial_model
from ucadi.ops.config import load_config
from ucadi.ops.tls import TLSFiles, secure_channel
from ucadi.ops.tracing import tracer, use_span_exporter
from ucadi.v1 import crypto_pb2, crypto_pb2_grpc, federation_pb2


@pytest.fixture()
def spans():
    exporter = InMemorySpanExporter()
    use_span_exporter(exporter, "ucadi-test")
    yield exporter
    exporter.clear()


def test_an_upload_is_one_trace_across_site_aggregator_and_crypto(tmp_path, federation_pki,
                                                                    spans):
    tls = {name: TLSFiles.from_dir(federation_pki / name)
           for name in ("aggregator", "crypto", "custodian", "main-campus")}
    crypto = run_crypto_service(tmp_path / "crypto", "127.0.0.1:0", tls["crypto"], None)
    secret = generate_secret_key()
    site_keys = generate_site_key_pair()
    channel = secure_channel(crypto.target, tls["main-campus"])
    crypto_pb2_grpc.KeyServiceStub(channel).RegisterSiteKey(
        crypto_pb2.RegisterSiteKeyRequest(public_key_pem=site_keys.public_pem()), timeout=10)
    channel.close()
    channel = secure_channel(crypto.target, tls["custodian"])
    crypto_pb2_grpc.KeyServiceStub(channel).PutWrappedKeys(crypto_pb2.PutWrappedKeysRequest(
        key_id=secret.key_id_hex, parameter_set=secret.params.name, activate=True,
        blobs=[crypto_pb2.WrappedBlob(site="main-campus", blob=wrap_secret(
            secret, "main-campus", site_keys.public_key, generate_custodian_key()))]), timeout=10)
    channel.close()
    config = load_config(DEFAULTS)
    # One hand-driven site: the shared-key mode (masks need two sites and their phases).
    config["federation"].update(min_sites=1, total_rounds=1, pairwise_masks=False)
    config["encryption"]["key_id"] = secret.key_id_hex
    config["server"].update(address="127.0.0.1:0", metrics_address="", state_dir=str(
        tmp_path / "aggregator"), tls_dir=str(federation_pki / "aggregator"),
        crypto_address=crypto.target)
    aggregator, coordinator = start_aggregator(config)
    client = FederationClient(aggregator.target, tls["main-campus"])
    try:
        joined = client.join(8, "test")
        client.get_round()
        deadline = time.monotonic() + 30
        while client.get_round().round != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        model = initial_model(joined.model.arch, joined.model.preset, 2, joined.model.init_seed)
        vector = ParameterLayout.of(model.state_dict()).flatten(model.state_dict())
        path = SiteCipher(secret).encrypt_to_file(
            vector, weight=8, round_number=1, layout_hash=joined.model.layout_hash,
            path=tmp_path / "update.lwe", site=joined.site)
        with tracer("site").start_as_current_span("site-round") as root:
            client.upload_update(federation_pb2.UpdateHeader(
                round=1, base_version=0, parameter_set=secret.params.name,
                key_id=secret.key_id_hex, layout_hash=joined.model.layout_hash,
                num_samples=8, local_epochs=1,
                optimizer_digest=announced_optimization(
                    joined.model.optimizer_json).digest), path)
            trace_id = root.get_span_context().trace_id
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            names = {s.name for s in spans.get_finished_spans()
                     if s.context.trace_id == trace_id}
            if any("AddContribution" in n for n in names):
                break
            time.sleep(0.2)
    finally:
        client.close()
        coordinator.stop()
        aggregator.stop(0)
        crypto.stop(0)
    assert any("FederationService/UploadUpdate" in n for n in names), names
    assert "upload" in names and "sum-contribution" in names, names
    assert any("SumService/AddContribution" in n for n in names), names
