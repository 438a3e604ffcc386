"""What the web page tests share: a served model with the page on 127.0.0.1, synthetic studies,
and an HTTPS client that speaks multipart like the page does."""

from __future__ import annotations

import datetime
import http.client
import json
import shutil
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from model_publishing import publish

from services.inference.server import InferenceService, ServiceConfig
from services.inference.web.https import WebServer
from services.inference.web.settings import WebSettings
from ucadi.ct.synth import generate_case, plan_cohort
from ucadi.ops.tls import TLSFiles


@dataclass
class ServedPage:
    """An inference service with its page; stop() ends both."""

    service: InferenceService
    web: WebServer

    @property
    def port(self) -> int:
        return self.web.port

    def stop(self) -> None:
        self.service.stop(0)


def serve_page(root: Path, server_tls: TLSFiles, *, card_metrics: dict[str, float] | None = None,
               **web: Any) -> ServedPage:
    """A cpu-small model (version 7, its card's validation `card_metrics`) served with gRPC on
    mTLS and the page per `web`."""
    publish(root / "model", version=7, seed=0)
    if card_metrics:
        card_file = root / "model" / "card.json"
        card = json.loads(card_file.read_text())
        card_file.write_text(json.dumps({**card, "metrics": card_metrics}))
    service = InferenceService(ServiceConfig(model_dir=root / "model"))
    service.start(tls=server_tls, metrics_address=None)
    settings = WebSettings(**{"address": "127.0.0.1:0", "tls_cert_file": server_tls.cert,
                              "tls_key_file": server_tls.key, "auth": "none",
                              "history_db": root / "history.sqlite", **web})
    try:
        page = service.start_web(settings)
    except BaseException:
        service.stop(0)
        raise
    return ServedPage(service, page)


def synthetic_study(out: Path) -> Path:
    """One COVID-19 case of the `tiny` synthetic cohort as a DICOM folder."""
    plan = next(p for p in plan_cohort("tiny", seed=0) if p.label == "covid")
    record = generate_case(plan, "tiny", seed=0, out_dir=out)
    return out / str(record["series_path"])


def truncated_copy(study: Path, out: Path) -> Path:
    """The study with every slice cut to 60 % of its bytes: headers read, pixels do not."""
    shutil.copytree(study, out)
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            path.write_bytes(data[: int(len(data) * 0.6)])
    return out


def multipart_body(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """(body, content type) of a form with one 'file' part per (name, bytes)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                     f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                     .encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def https_request(port: int, method: str, path: str, *, body: bytes | None = None,
                  headers: dict[str, str] | None = None, cert: TLSFiles | None = None
                  ) -> tuple[int, dict[str, str], bytes]:
    """One HTTPS request to the page on 127.0.0.1 (server certificate not checked)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(cert.cert, cert.key)
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def error_of(body: bytes) -> str:
    """The readable message of a JSON refusal."""
    return json.loads(body)["error"]


def site_certificate(ca_dir: Path, out: Path, name: str, unit: str, server_ca: Path) -> Path:
    """A client certificate from a hospital's own CA (any OU), with the inference server's CA
    as ca.crt: what a PACS gateway holds. Returns its TLS folder."""
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                                     x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))
    out.mkdir(parents=True)
    (out / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    shutil.copy(server_ca, out / "ca.crt")
    return out
