"""Mutual TLS for every gRPC channel, and the caller's identity from its certificate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from ucadi.errors import UcadiError

CA_FILE = "ca.crt"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"


class AuthenticationError(UcadiError):
    """The caller presented no verified certificate, or one without a usable identity."""

    status = "UNAUTHENTICATED"


class PermissionDeniedError(UcadiError):
    """The caller's identity is known but not allowed to do this."""

    status = "PERMISSION_DENIED"


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of one party: the federation CA, its certificate and its private key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_dir(cls, directory: Path) -> TLSFiles:
        """The files ca.crt, tls.crt, tls.key of a startup kit or service folder."""
        directory = Path(directory)
        files = cls(directory / CA_FILE, directory / CERT_FILE, directory / KEY_FILE)
        missing = [p.name for p in (files.ca, files.cert, files.key) if not p.is_file()]
        if missing:
            raise AuthenticationError(
                f"TLS folder {directory} lacks {', '.join(missing)} "
                f"(expected {CA_FILE}, {CERT_FILE}, {KEY_FILE}; made by `ucadi pki issue`)")
        return files

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert, key) PEM bytes."""
        return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()


@dataclass(frozen=True)
class Identity:
    """Who is calling: the certificate's CN (name) and OU (role)."""

    name: str
    role: str

    def require_role(self, *roles: str) -> None:
        """Raise PermissionDeniedError unless the caller has one of `roles`."""
        if self.role not in roles:
            raise PermissionDeniedError(
                f"{self.role} {self.name!r} may not call this; allowed roles: {', '.join(roles)}")


def channel_credentials(tls: TLSFiles) -> grpc.ChannelCredentials:
    """Client credentials presenting our certificate and trusting only the federation CA."""
    ca, cert, key = tls.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                        certificate_chain=cert)


def secure_channel(target: str, tls: TLSFiles,
                   options: tuple[tuple[str, object], ...] = ()) -> grpc.Channel:
    """A mutual-TLS channel to target (host:port), propagating the trace context."""
    from ucadi.ops.tracing import traced_channel

    return traced_channel(grpc.secure_channel(target, channel_credentials(tls),
                                              options=list(options)))


def identity_from_pem(pem: bytes) -> Identity:
    """Identity (CN, OU) of a PEM certificate."""
    cert = x509.load_pem_x509_certificate(pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    roles = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if not names or not roles:
        raise AuthenticationError("client certificate lacks a CN (name) or OU (role)")
    return Identity(name=str(names[0].value), role=str(roles[0].value))


def peer_identity(context: grpc.ServicerContext) -> Identity:
    """The verified identity of the caller of an RPC; AuthenticationError if there is none."""
    auth = context.auth_context()
    pem = auth.get("x509_pem_cert")
    if not pem:
        raise AuthenticationError("the call carried no verified client certificate (mutual TLS "
                                  "with a certificate from the federation CA is required)")
    return identity_from_pem(pem[0])
