"""Hospital systems calling inference without a federation certificate: a certificate from a
site-local CA (tritonclient, `ucadi diagnose`), an OIDC bearer token over server-only TLS, and
the callers refused; each call logged and counted by caller.

tritonclient registers the protobuf package `inference` too, so it runs in a child process (a
real external client) while the server runs in this one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import jwt
import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric import rsa
from model_publishing import publish
from prometheus_client import REGISTRY
from web_page_fixtures import site_certificate, synthetic_study

from services.inference.callers import CallerPolicy, CallerPolicyError, TokenVerifier
from services.inference.server import InferenceService, ServiceConfig
from ucadi.cli import main as ucadi_main
from ucadi.ops.pki import create_ca, issue_certificate
from ucadi.ops.tls import secure_channel
from ucadi.v1 import open_inference_pb2 as oip
from ucadi.v1 import open_inference_pb2_grpc as oip_grpc

torch.set_num_threads(1)
MODEL = "ucadi-covid-ct"
ISSUER = "https://login.hospital.example/realms/radiology"
AUDIENCE = "ucadi-inference"
INPUT = (2, 1, 16, 32, 32)

TRITON_CLIENT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as triton
url, ca, cert, key, token, tensor_file, model = sys.argv[1:8]
client = triton.InferenceServerClient(url, ssl=True, root_certificates=ca,
                                      private_key=key or None, certificate_chain=cert or None)
headers = {"authorization": f"Bearer {token}"} if token else None
x = np.load(tensor_file)
inputs = [triton.InferInput("ct_volume", list(x.shape), "FP32")]
inputs[0].set_data_from_numpy(x)
result = client.infer(model, inputs, headers=headers)
print(json.dumps({"ready": client.is_model_ready(model, headers=headers),
                  "probabilities": result.as_numpy("probabilities").tolist(),
                  "version": result.get_response().model_version}))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("hospital")
    create_ca(root / "federation-ca", "test-federation-ca")
    create_ca(root / "site-ca", "hospital-ca")
    create_ca(root / "foreign-ca", "someone-elses-ca")
    server = issue_certificate(root / "federation-ca", root / "server", "inference", "service")
    federation_ca = root / "federation-ca" / "ca.crt"
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    (root / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}))
    publish(root / "model", version=4, seed=0)
    return {
        "root": root, "server": server, "federation_ca": federation_ca,
        "site_ca": root / "site-ca" / "ca.crt", "signing_key": signing_key,
        "jwks": root / "jwks.json",
        "pacs": site_certificate(root / "site-ca", root / "pacs", "pacs-gateway", "pacs",
                                 federation_ca),
        "foreign": site_certificate(root / "foreign-ca", root / "foreign", "intruder", "pacs",
                                    federation_ca),
    }


def start(site: dict, policy: CallerPolicy) -> InferenceService:
    service = InferenceService(ServiceConfig(model_dir=site["root"] / "model", callers=policy))
    service.start(tls=site["server"], metrics_address=None)
    return service


def token(site: dict, *, roles: list[str], audience: str = AUDIENCE, expires_s: float = 300,
          name: str = "ai-orchestrator") -> str:
    claims = {"iss": ISSUER, "aud": audience, "sub": "svc-123", "preferred_username": name,
              "roles": roles, "exp": int(time.time() + expires_s), "iat": int(time.time())}
    return jwt.encode(claims, site["signing_key"], algorithm="RS256", headers={"kid": "k1"})


def run_triton(target: str, tmp_path: Path, *, ca: Path, cert: Path | None = None,
               key: Path | None = None, bearer: str = "") -> dict:
    x = np.random.default_rng(0).normal(size=INPUT).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    done = subprocess.run([sys.executable, "-c", TRITON_CLIENT, target, str(ca),
                           str(cert or ""), str(key or ""), bearer, str(tmp_path / "x.npy"),
                           MODEL], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def calls_by(caller: str, via: str, code: str = "OK") -> float:
    return REGISTRY.get_sample_value("ucadi_inference_caller_requests_total",
                                     {"caller": caller, "via": via, "code": code}) or 0.0


@pytest.fixture(scope="module")
def mutual_tls_server(site):
    service = start(site, CallerPolicy(site_ca_file=site["site_ca"]))
    yield service
    service.stop(0)


def test_tritonclient_with_a_site_ca_certificate_is_served_logged_and_counted(
        mutual_tls_server, site, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level("INFO", logger="services.inference.metrics")
    before = calls_by("pacs-gateway", "site-ca")
    pacs = site["pacs"]
    answer = run_triton(mutual_tls_server.running.target, tmp_path, ca=pacs / "ca.crt",
                        cert=pacs / "tls.crt", key=pacs / "tls.key")
    assert answer["ready"] and answer["version"] == "4"
    assert np.asarray(answer["probabilities"]).shape == (2, 2)
    assert calls_by("pacs-gateway", "site-ca") - before == 2  # ModelReady + ModelInfer
    assert "ModelInfer by pacs-gateway (role pacs, via site-ca): OK" in caplog.text


def test_ucadi_diagnose_with_a_site_ca_certificate(mutual_tls_server, site, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture):
    study = synthetic_study(tmp_path / "synth")
    code = ucadi_main(["diagnose", str(study), "--server", mutual_tls_server.running.target,
                       "--tls-dir", str(site["pacs"]), "--json"])
    assert code == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["model_version"] == "4" and answer["samples"] == 5
    assert calls_by("pacs-gateway", "site-ca") >= 1


def test_federation_certificates_still_work_beside_the_site_ca(mutual_tls_server, site):
    operator = issue_certificate(site["root"] / "federation-ca", site["root"] / "operator-1",
                                 "operator-1", "operator")
    with secure_channel(mutual_tls_server.running.target, operator) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        before = calls_by("operator-1", "federation-ca")
        assert stub.ServerLive(oip.ServerLiveRequest(), timeout=10).live
    assert calls_by("operator-1", "federation-ca") - before == 1


def test_a_certificate_from_any_other_ca_is_refused_in_the_handshake(mutual_tls_server, site):
    from ucadi.ops.tls import TLSFiles

    with secure_channel(mutual_tls_server.running.target,
                        TLSFiles.from_dir(site["foreign"])) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            oip_grpc.GRPCInferenceServiceStub(channel).ServerLive(oip.ServerLiveRequest(),
                                                                  timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_site_ca_can_replace_the_federation_ca(site):
    service = start(site, CallerPolicy(federation_ca=False, site_ca_file=site["site_ca"]))
    operator = issue_certificate(site["root"] / "federation-ca", site["root"] / "operator-2",
                                 "operator-2", "operator")
    try:
        with secure_channel(service.running.target, operator) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                oip_grpc.GRPCInferenceServiceStub(channel).ServerLive(oip.ServerLiveRequest(),
                                                                      timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        service.stop(0)


@pytest.fixture(scope="module")
def token_server(site):
    verifier = TokenVerifier.from_jwks_file(site["jwks"], issuer=ISSUER, audience=AUDIENCE)
    service = start(site, CallerPolicy(mode="token", tokens=verifier,
                                       allowed_roles=("radiology-ai",)))
    yield service
    service.stop(0)


def test_tritonclient_and_ucadi_diagnose_with_a_bearer_token(token_server, site,
                                                             tmp_path: Path, capsys):
    bearer = token(site, roles=["radiology-ai"])
    before = calls_by("ai-orchestrator", "token")
    answer = run_triton(token_server.running.target, tmp_path, ca=site["federation_ca"],
                        bearer=bearer)
    assert answer["ready"] and answer["version"] == "4"
    assert calls_by("ai-orchestrator", "token") - before == 2  # ModelReady + ModelInfer
    (tmp_path / "token").write_text(bearer + "\n")
    study = synthetic_study(tmp_path / "synth")
    assert ucadi_main(["diagnose", str(study), "--server", token_server.running.target,
                       "--ca-file", str(site["federation_ca"]), "--token-file",
                       str(tmp_path / "token"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_version"] == "4"
    assert calls_by("ai-orchestrator", "token") - before == 3


@pytest.mark.parametrize("case,make_token,code,message", [
    ("no token", lambda site: None, grpc.StatusCode.UNAUTHENTICATED, "authorization: Bearer"),
    ("expired", lambda site: token(site, roles=["radiology-ai"], expires_s=-60),
     grpc.StatusCode.UNAUTHENTICATED, "expired"),
    ("another audience", lambda site: token(site, roles=["radiology-ai"], audience="billing"),
     grpc.StatusCode.UNAUTHENTICATED, "audience"),
    ("role not allowed", lambda site: token(site, roles=["billing"], name="billing-bot"),
     grpc.StatusCode.PERMISSION_DENIED, "allowed roles: radiology-ai"),
])
def test_token_callers_are_refused_with_a_reason(token_server, site, case, make_token, code,
                                                  message):
    credentials = grpc.ssl_channel_credentials(site["federation_ca"].read_bytes())
    bearer = make_token(site)
    metadata = [("authorization", f"Bearer {bearer}")] if bearer else []
    with grpc.secure_channel(token_server.running.target, credentials) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            oip_grpc.GRPCInferenceServiceStub(channel).ServerLive(
                oip.ServerLiveRequest(), metadata=metadata, timeout=10)
    assert refused.value.code() == code, case
    assert message in refused.value.details(), refused.value.details()


def test_a_policy_that_admits_nobody_is_refused_at_start():
    with pytest.raises(CallerPolicyError, match="no client could ever call"):
        CallerPolicy(federation_ca=False)
    with pytest.raises(CallerPolicyError, match="oidc_jwks_file"):
        CallerPolicy(mode="token")
