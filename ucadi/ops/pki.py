"""The federation PKI: a CA and per-service/per-site certificates (the sites' "startup kits").

Identity is carried by the certificate, never by a message field: the subject CN is the name
(`main-campus`, `aggregator`) and the subject OU is the role (`site`, `service`, `custodian`,
`operator`). Every gRPC channel is mutual TLS against the federation CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ucadi.errors import UcadiError
from ucadi.ops.tls import CA_FILE, CERT_FILE, KEY_FILE, TLSFiles

ROLES = ("site", "service", "custodian", "operator")
CA_KEY_FILE = "ca.key"
CA_VALIDITY_DAYS = 3650
LEAF_VALIDITY_DAYS = 825
DEFAULT_HOSTNAMES = ("localhost",)
DEFAULT_IPS = ("127.0.0.1",)


class PKIError(UcadiError):
    """A CA or certificate could not be created or read."""


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def create_ca(out_dir: Path, name: str = "ucadi-federation-ca") -> Path:
    """Create a federation CA (ca.crt, ca.key) in out_dir; refuses to overwrite an existing one."""
    out_dir = Path(out_dir)
    if (out_dir / CA_KEY_FILE).exists():
        raise PKIError(f"{out_dir} already holds a CA key; use another folder or issue from it")
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "UCADI federation")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_VALIDITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (out_dir / CA_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(out_dir / CA_KEY_FILE, _key_pem(key))
    return out_dir


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / CA_FILE).read_bytes())
        key = serialization.load_pem_private_key((ca_dir / CA_KEY_FILE).read_bytes(), None)
    except FileNotFoundError as exc:
        raise PKIError(f"no CA in {ca_dir}: expected {CA_FILE} and {CA_KEY_FILE} "
                       "(create one with `ucadi pki init`)") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{ca_dir / CA_KEY_FILE} is not an EC private key")
    return cert, key


def issue_certificate(ca_dir: Path, out_dir: Path, name: str, role: str,
                      hostnames: tuple[str, ...] = DEFAULT_HOSTNAMES,
                      ips: tuple[str, ...] = DEFAULT_IPS) -> TLSFiles:
    """Issue a client+server certificate for `name` with `role`; writes ca.crt, tls.crt, tls.key."""
    if role not in ROLES:
        raise PKIError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not name or any(c in name for c in "/\\ ,="):
        raise PKIError(f"name {name!r} must be non-empty without spaces, slashes, commas or '='")
    ca_dir, out_dir = Path(ca_dir), Path(out_dir)
    ca_cert, ca_key = _load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in (name, *hostnames)]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.COMMON_NAME, name),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "UCADI federation")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=LEAF_VALIDITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CA_FILE).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (out_dir / CERT_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(out_dir / KEY_FILE, _key_pem(key))
    return TLSFiles.from_dir(out_dir)
