"""Who may use the radiologist's page, and what it refuses: client certificates from the
site-local CA, bearer tokens, a sign-in proxy's headers, CSRF, the content-security policy,
oversize and malformed uploads, the history's retention, and the page's settings."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from pathlib import Path

import jwt
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric import rsa
from web_page_fixtures import (
    error_of,
    https_request,
    multipart_body,
    serve_page,
    site_certificate,
    synthetic_study,
)

from services.inference.callers import TokenVerifier
from services.inference.server import add_arguments
from services.inference.settings import settings_from_args
from services.inference.web.history import DiagnosisHistory
from services.inference.web.settings import WebSettingsError, web_settings
from ucadi.ops.pki import create_ca, issue_certificate
from ucadi.ops.tls import TLSFiles

torch.set_num_threads(1)
ISSUER, AUDIENCE = "https://login.hospital.example", "ucadi-page"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("web-pki")
    create_ca(root / "federation-ca", "test-federation-ca")
    create_ca(root / "site-ca", "hospital-ca")
    server = issue_certificate(root / "federation-ca", root / "server", "inference", "service")
    doctor = site_certificate(root / "site-ca", root / "doctor", "dr-chen", "radiologist",
                              root / "federation-ca" / "ca.crt")
    return {"root": root, "server": server, "site_ca": root / "site-ca" / "ca.crt",
            "doctor": TLSFiles.from_dir(doctor)}


@pytest.fixture(scope="module")
def certificate_page(pki, tmp_path_factory: pytest.TempPathFactory):
    served = serve_page(tmp_path_factory.mktemp("page-cert"), pki["server"],
                        auth="certificate", client_ca_file=pki["site_ca"])
    yield served
    served.stop()


def session(port: int, **kwargs) -> dict:
    status, _, body = https_request(port, "GET", "/api/session", **kwargs)
    assert status == 200, body
    return json.loads(body)


def test_a_site_ca_certificate_signs_in_and_none_gets_a_readable_refusal(certificate_page,
                                                                         pki):
    port = certificate_page.port
    signed_in = session(port, cert=pki["doctor"])
    assert (signed_in["user"], signed_in["role"]) == ("dr-chen", "radiologist")
    status, headers, body = https_request(port, "GET", "/api/session")
    assert status == 401
    assert "needs a client certificate from the hospital's certificate authority" in \
        error_of(body)
    for answer_headers in (headers, https_request(port, "GET", "/", cert=pki["doctor"])[1]):
        csp = answer_headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert answer_headers["x-content-type-options"] == "nosniff"


def test_a_certificate_from_another_ca_fails_the_handshake(certificate_page, pki):
    stranger = issue_certificate(pki["root"] / "federation-ca", pki["root"] / "stranger",
                                 "stranger", "operator")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_request(certificate_page.port, "GET", "/api/session", cert=stranger)


def test_changes_need_the_csrf_token_and_this_origin(certificate_page, pki):
    port = certificate_page.port
    body, content_type = multipart_body([("IM1.dcm", b"x")])
    headers = {"Content-Type": content_type}
    status, _, answer = https_request(port, "POST", "/api/diagnoses", body=body,
                                      headers=headers, cert=pki["doctor"])
    assert status == 403 and "CSRF token" in error_of(answer)
    token = session(port, cert=pki["doctor"])["csrf_token"]
    status, _, answer = https_request(
        port, "POST", "/api/diagnoses", body=body, cert=pki["doctor"],
        headers={**headers, "X-CSRF-Token": token, "Origin": "https://evil.example"})
    assert status == 403 and "evil.example" in error_of(answer)


def test_an_oversize_upload_is_refused_before_its_body_is_sent(certificate_page, pki):
    port = certificate_page.port
    limit_mib = certificate_page.service.config.limits.max_upload_bytes >> 20
    token = session(port, cert=pki["doctor"])["csrf_token"]
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.load_cert_chain(pki["doctor"].cert, pki["doctor"].key)
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        connection.putrequest("POST", "/api/diagnoses")
        for name, value in (("Content-Type", "multipart/form-data; boundary=x"),
                            ("Content-Length", str(50 << 30)), ("X-CSRF-Token", token)):
            connection.putheader(name, value)
        connection.endheaders()  # and not one byte of the 50 GiB
        started = time.monotonic()
        response = connection.getresponse()
        assert response.status == 413
        assert f"this server accepts studies up to {limit_mib} MiB" in error_of(response.read())
        assert time.monotonic() - started < 5
    finally:
        connection.close()


@pytest.mark.parametrize("files,message", [
    ([("study.zip", b"not a zip at all")], "study.zip is not a zip archive"),
    ([("../escape.dcm", b"x")], "is not a relative path inside the study"),
    ([("IM1.dcm", b"not dicom")] * 2, "was sent twice"),
])
def test_bad_uploads_get_a_readable_message(certificate_page, pki, files, message):
    port = certificate_page.port
    token = session(port, cert=pki["doctor"])["csrf_token"]
    body, content_type = multipart_body(files)
    status, _, answer = https_request(port, "POST", "/api/diagnoses", body=body,
                                      cert=pki["doctor"],
                                      headers={"Content-Type": content_type,
                                               "X-CSRF-Token": token})
    assert status == 400, answer
    assert message in error_of(answer)
    assert "ucadi-web-study" not in error_of(answer)


def test_bearer_tokens_from_the_identity_provider(pki, tmp_path: Path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    verifier = TokenVerifier({"keys": [{**jwk, "kid": "k1"}]}, issuer=ISSUER, audience=AUDIENCE)
    served = serve_page(tmp_path, pki["server"], auth="bearer", tokens=verifier)
    try:
        claims = {"iss": ISSUER, "aud": AUDIENCE, "preferred_username": "dr-wu",
                  "roles": ["radiologist"], "exp": int(time.time()) + 300}
        bearer = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        signed_in = session(served.port, headers={"Authorization": f"Bearer {bearer}"})
        assert signed_in["user"] == "dr-wu"
        status, _, body = https_request(served.port, "GET", "/api/session")
        assert status == 401 and "identity provider" in error_of(body)
    finally:
        served.stop()


def test_proxy_headers_are_believed_only_from_trusted_proxies(pki, tmp_path: Path):
    trusted = serve_page(tmp_path / "a", pki["server"], auth="header")
    untrusted = serve_page(tmp_path / "b", pki["server"], auth="header",
                           trusted_proxies=("10.0.0.0/8",))
    try:
        headers = {"X-Forwarded-User": "dr-li", "X-Forwarded-Groups": "radiologist,reader"}
        signed_in = session(trusted.port, headers=headers)
        assert (signed_in["user"], signed_in["role"]) == ("dr-li", "radiologist,reader")
        status, _, body = https_request(trusted.port, "GET", "/api/session")
        assert status == 401 and "X-Forwarded-User" in error_of(body)
        status, _, body = https_request(untrusted.port, "GET", "/api/session", headers=headers)
        assert status == 401 and "not from the trusted sign-in proxy" in error_of(body)
    finally:
        trusted.stop()
        untrusted.stop()


def test_history_keeps_results_without_pixels_for_the_retention_period(tmp_path: Path):
    entry = {"study_uid": "1.2.3", "series_uid": "1.2.3.4", "predicted_class": "covid",
             "covid_probability": 0.9, "probabilities": {"covid": 0.9, "non_covid": 0.1},
             "model_version": "7", "user": "dr-chen"}
    kept = DiagnosisHistory(tmp_path / "kept.sqlite", retention_days=30)
    kept.add(entry)
    assert [e["study_uid"] for e in kept.recent()] == ["1.2.3"]
    assert kept.recent()[0]["probabilities"] == {"covid": 0.9, "non_covid": 0.1}
    brief = DiagnosisHistory(tmp_path / "brief.sqlite", retention_days=1e-6)
    brief.add(entry)
    time.sleep(0.2)
    assert brief.expire() == 1 and brief.recent() == []
    none = DiagnosisHistory(tmp_path / "none.sqlite", retention_days=0)
    none.add(entry)
    assert none.recent() == []


def test_the_page_is_off_by_default_and_never_open_beyond_loopback(tmp_path: Path):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--model", str(tmp_path), "--tls-dir", str(tmp_path / "tls")]
    assert web_settings(settings_from_args(parser.parse_args(base)), None) is None
    page = web_settings(settings_from_args(parser.parse_args(
        [*base, "--web-address", "127.0.0.1:8443", "--web-auth", "none"])), None)
    assert page.tls_cert_file == tmp_path / "tls" / "tls.crt" and page.auth == "none"
    with pytest.raises(WebSettingsError, match="only on a loopback address"):
        web_settings(settings_from_args(parser.parse_args(
            [*base, "--web-address", "0.0.0.0:8443", "--web-auth", "none"])), None)
    with pytest.raises(WebSettingsError, match="web.client_ca_file"):
        web_settings(settings_from_args(parser.parse_args(
            [*base, "--web-address", "0.0.0.0:8443"])), None)


@pytest.fixture(scope="module")
def study_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, bytes]]:
    """The synthetic study as the page uploads it: a zip, and a NIfTI volume."""
    import io
    import zipfile

    import nibabel
    import numpy as np

    from ucadi.ct import load_study

    study = synthetic_study(tmp_path_factory.mktemp("synth"))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as writer:
        for path in sorted(study.iterdir()):
            writer.write(path, path.name)
    ct = load_study(study)
    # The loader reads NIfTI in canonical (RAS) axes and flips x and y into DICOM's order.
    data = np.ascontiguousarray(ct.volume_hu.transpose(2, 1, 0)[::-1, ::-1, :])
    spacing = ct.spacing_mm
    volume = nibabel.Nifti1Image(data.astype(np.int16),
                                 np.diag([spacing[2], spacing[1], spacing[0], 1.0]))
    nifti = tmp_path_factory.mktemp("nifti") / "study.nii.gz"
    nibabel.save(volume, str(nifti))
    return {"zip": ("study.zip", archive.getvalue()),
            "nifti": ("study.nii.gz", nifti.read_bytes())}


@pytest.mark.parametrize("kind", ["zip", "nifti"])
def test_a_zip_or_nifti_upload_is_diagnosed_with_viewer_data(certificate_page, pki,
                                                              study_files, kind):
    port, doctor = certificate_page.port, pki["doctor"]
    token = session(port, cert=doctor)["csrf_token"]
    body, content_type = multipart_body([study_files[kind]])
    status, _, answer = https_request(port, "POST", "/api/diagnoses", body=body, cert=doctor,
                                      headers={"Content-Type": content_type,
                                               "X-CSRF-Token": token})
    assert status == 201, answer
    result = json.loads(answer)
    assert result["samplings"]["count"] == 5 and result["model"]["version"] == "7"
    viewer = result["viewer"]
    status, _, ct = https_request(port, "GET", f"/api/diagnoses/{result['id']}/ct.bin",
                                  cert=doctor)
    assert status == 200 and len(ct) == 2 * viewer["slices"] * viewer["rows"] * viewer["columns"]
    status, _, heat = https_request(port, "GET", f"/api/diagnoses/{result['id']}/heatmap.bin",
                                    cert=doctor)
    assert status == 200 and len(heat) == len(ct) // 2 and max(heat) > 0


@pytest.mark.slow
def test_ucadi_serve_inference_with_web_address_serves_the_page(pki, tmp_path: Path):
    import os
    import re
    import subprocess
    import sys

    from model_publishing import publish

    publish(tmp_path / "model", version=3, seed=0)
    process = subprocess.Popen(
        [sys.executable, "-m", "ucadi.cli", "serve", "inference", "--model",
         str(tmp_path / "model"), "--tls-dir", str(pki["server"].cert.parent), "--address",
         "127.0.0.1:0", "--metrics-address", "", "--web-address", "127.0.0.1:0",
         "--web-auth", "none"],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            page = re.search(r"radiologist's page on https://127\.0\.0\.1:(\d+)/", line)
            if page:
                break
        assert page, "".join(lines)
        assert session(int(page.group(1)))["user"] == "local user"
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert (tmp_path / "var" / "site" / "web-history.sqlite").exists()
