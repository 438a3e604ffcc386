"""Certificates over time: their expiry as a metric, and server certificates re-read when the
mounted files change.

Kubernetes updates a mounted Secret in place (an atomic swap of the volume's `..data` link), so
a renewed certificate (cert-manager, or `kubectl create secret ... | kubectl apply`) reaches the
files within a minute without a pod restart. A gRPC server built with
`reloading_server_credentials` looks at the files' identity (device, inode, size, mtime) at each
new TLS handshake and, when it changed, loads the new pair, checks that the key matches the
certificate and serves it from then on; connections already open keep their session. A pair
caught half-written is skipped with one warning and looked at again on the next handshake.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from prometheus_client import Gauge

from ucadi.ops.tls import TLSFiles

log = logging.getLogger(__name__)

CERT_EXPIRY = Gauge("ucadi_tls_cert_expiry_timestamp_seconds",
                    "When a certificate this process uses expires (Unix time): its own "
                    "certificate ('leaf') and the earliest of the CA certificates it trusts "
                    "('ca')", ["certificate"])

FileIdentity = tuple[tuple[int, int, int, int], ...]


def record_expiry(tls: TLSFiles) -> tuple[float, float]:
    """Set the expiry gauge from the files; returns (leaf, earliest CA) as Unix times."""
    leaf = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    cas = x509.load_pem_x509_certificates(tls.ca.read_bytes())
    leaf_expiry = leaf.not_valid_after_utc.timestamp()
    ca_expiry = min(ca.not_valid_after_utc.timestamp() for ca in cas)
    CERT_EXPIRY.labels("leaf").set(leaf_expiry)
    CERT_EXPIRY.labels("ca").set(ca_expiry)
    return leaf_expiry, ca_expiry


def _identity(tls: TLSFiles) -> FileIdentity:
    """What changes when any of the three files is replaced (links resolved)."""
    found = []
    for path in (tls.ca, tls.cert, tls.key):
        stat = os.stat(path)
        found.append((stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(found)


def _matching_pair(tls: TLSFiles) -> tuple[bytes, bytes, bytes]:
    """(ca, cert, key) PEM bytes, after checking that the key belongs to the certificate."""
    ca, cert, key = tls.read()
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    certificate_key = x509.load_pem_x509_certificate(cert).public_key().public_bytes(encoding,
                                                                                     public)
    private_key = load_pem_private_key(key, password=None).public_key().public_bytes(encoding,
                                                                                     public)
    if certificate_key != private_key:
        raise ValueError(f"{tls.key} is not the key of {tls.cert}")
    return ca, cert, key


class ReloadingCertificates:
    """The server certificate configuration, re-read when the files change."""

    def __init__(self, tls: TLSFiles, client_ca: bytes | None = None) -> None:
        self.tls = tls
        self.client_ca = client_ca
        self._lock = threading.Lock()
        self._seen = _identity(tls)
        self.initial = self._configuration(*_matching_pair(tls))
        record_expiry(tls)

    def _configuration(self, ca: bytes, cert: bytes, key: bytes
                       ) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=self.client_ca or ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's per-handshake callback: a new configuration if the files changed, else None."""
        with self._lock:
            try:
                current = _identity(self.tls)
                if current == self._seen:
                    return None
                self._seen = current
                pair = _matching_pair(self.tls)
                leaf_expiry, _ = record_expiry(self.tls)
            except (OSError, ValueError) as exc:
                log.warning("TLS files changed but cannot be used yet (%s); serving the "
                            "previous certificate", exc)
                return None
        log.info("TLS certificate reloaded from %s (valid until %s)", self.tls.cert,
                 _utc(leaf_expiry))
        return self._configuration(*pair)


def _utc(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def reloading_server_credentials(tls: TLSFiles, require_client_auth: bool = True,
                                 client_ca: bytes | None = None) -> grpc.ServerCredentials:
    """Server credentials verifying client certificates from the federation CA, re-read when
    the files change.

    `require_client_auth=False` is for endpoints that outside systems call with server-side TLS
    only (the inference service in token mode); gRPC then asks for no client certificate.
    `client_ca` replaces the federation CA as the PEM bundle client certificates are verified
    against (the inference service's site-local CAs; fixed for the process's life).
    """
    certificates = ReloadingCertificates(tls, client_ca)
    return grpc.dynamic_ssl_server_credentials(certificates.initial, certificates.fetch,
                                               require_client_authentication=require_client_auth)

