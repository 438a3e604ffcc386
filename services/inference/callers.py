"""Who may call the inference service's gRPC ports, and who did.

A hospital's PACS, RIS or AI orchestrator holds no certificate of the federation's CA, so the
Open Inference Protocol and Diagnose ports accept callers by one of two policies
(`clients.mode`, docs/hospital-access.md):

  * mutual-tls: the TLS handshake requires a client certificate issued by a trusted CA: the
    federation CA (unless `clients.federation_ca` is false) and/or a site-local CA bundle
    (`clients.site_ca_file`). The caller is the certificate's CN, its role the OU;
  * token: server-only TLS; every call carries `authorization: Bearer <JWT>`, an OIDC token
    signed by a key of the issuer's JWKS, for the configured issuer and audience. The caller is
    the name claim, its roles the role claim.

Every call is admitted (or refused with UNAUTHENTICATED / PERMISSION_DENIED) before its servicer
runs; the caller, its role and how it was recognised are logged and counted by `metrics.observed`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from ucadi.errors import UcadiError
from ucadi.ops.tls import AuthenticationError, PermissionDeniedError

MODES = ("mutual-tls", "token")
# Signature algorithms an OIDC provider signs ID/access tokens with (no "none", no HMAC: the
# verifier holds only public keys).
TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
# Role of a site-CA certificate that carries no OU.
DEFAULT_CERTIFICATE_ROLE = "client"
# Distinct client certificates whose identity is remembered.
CERTIFICATE_CACHE = 1024


class CallerPolicyError(UcadiError):
    """The `clients` settings are inconsistent or name unreadable files."""


@dataclass(frozen=True)
class Caller:
    """An admitted caller: its name, role(s) and how it was recognised."""

    name: str
    roles: tuple[str, ...]
    via: str  # federation-ca | site-ca | token | plaintext

    @property
    def role(self) -> str:
        """The roles as one label ('-' when none)."""
        return ",".join(self.roles) or "-"


# The label of calls refused before a caller was known.
REFUSED = Caller(name="(refused)", roles=(), via="refused")


class TokenVerifier:
    """Verifies OIDC bearer tokens (JWT) against the issuer's public keys (a JWKS file).

    The JWKS is read from a file rather than fetched, so a site can run without a route to its
    identity provider (refresh the file, e.g. a mounted Secret, when the provider rotates keys).
    """

    def __init__(self, jwks: dict[str, Any], *, issuer: str, audience: str,
                 name_claim: str = "preferred_username", role_claim: str = "roles") -> None:
        if not issuer or not audience:
            raise CallerPolicyError("bearer tokens need clients.oidc_issuer and "
                                    "clients.oidc_audience (the token's iss and aud)")
        try:
            keys = jwt.PyJWKSet.from_dict(jwks).keys
        except jwt.PyJWTError as exc:
            raise CallerPolicyError(f"the JWKS holds no usable public key: {exc}") from None
        self.keys = {key.key_id: key for key in keys}
        self.issuer, self.audience = issuer, audience
        self.name_claim, self.role_claim = name_claim, role_claim

    @classmethod
    def from_jwks_file(cls, path: Path, **settings: str) -> TokenVerifier:
        """A verifier with the keys of a JWKS JSON file."""
        try:
            jwks = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise CallerPolicyError(f"cannot read the JWKS file {path}: {exc}") from None
        return cls(jwks, **settings)

    def verify(self, token: str) -> Caller:
        """The caller a valid token names; AuthenticationError saying why one is not valid."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self.keys.get(kid) if kid else (
                next(iter(self.keys.values())) if len(self.keys) == 1 else None)
            if key is None:
                raise AuthenticationError(f"the bearer token is signed with key {kid!r}, which "
                                          "is not in the issuer's JWKS this server trusts")
            claims = jwt.decode(token, key.key, algorithms=list(TOKEN_ALGORITHMS),
                                audience=self.audience, issuer=self.issuer,
                                options={"require": ["exp", "iss", "aud"]})
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"the bearer token was refused: {exc} (expected a token "
                                      f"of issuer {self.issuer!r} for audience "
                                      f"{self.audience!r})") from None
        name = claims.get(self.name_claim) or claims.get("sub")
        if not name:
            raise AuthenticationError(f"the bearer token names no caller (no "
                                      f"{self.name_claim!r} or 'sub' claim)")
        roles = claims.get(self.role_claim) or []
        roles = [roles] if isinstance(roles, str) else roles
        return Caller(name=str(name), roles=tuple(str(r) for r in roles), via="token")


@dataclass(frozen=True)
class CallerPolicy:
    """Which callers the gRPC ports accept (the `clients` settings)."""

    mode: str = "mutual-tls"
    federation_ca: bool = True
    site_ca_file: Path | None = None
    allowed_roles: tuple[str, ...] = ()
    tokens: TokenVerifier | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CallerPolicyError(f"clients.mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.mode == "token" and self.tokens is None:
            raise CallerPolicyError("clients.mode token needs clients.oidc_jwks_file, "
                                    "oidc_issuer and oidc_audience")
        if self.mode == "mutual-tls" and not self.federation_ca and self.site_ca_file is None:
            raise CallerPolicyError("clients.federation_ca is false and no clients.site_ca_file "
                                    "is set: no client could ever call")

    @property
    def require_client_certificate(self) -> bool:
        """Whether the TLS handshake demands a client certificate."""
        return self.mode == "mutual-tls"


def read_ca_bundle(path: Path) -> list[x509.Certificate]:
    """The certificates of a PEM bundle; CallerPolicyError when none can be read."""
    try:
        certificates = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise CallerPolicyError(f"cannot read the CA bundle {path}: {exc}") from None
    return certificates


class CallerGate:
    """Admits each call under a policy: the credentials for the port, and per-call checks."""

    def __init__(self, policy: CallerPolicy, federation_ca_pem: bytes | None) -> None:
        self.policy = policy
        self.plaintext = federation_ca_pem is None
        self._trusted: list[tuple[str, x509.Certificate]] = []
        if federation_ca_pem is not None and policy.federation_ca:
            self._trusted += [("federation-ca", ca)
                              for ca in x509.load_pem_x509_certificates(federation_ca_pem)]
        if policy.site_ca_file is not None:
            self._trusted += [("site-ca", ca) for ca in read_ca_bundle(policy.site_ca_file)]
        # A client calls many times with one certificate: parse and check it once.
        self._caller_of_pem = functools.lru_cache(maxsize=CERTIFICATE_CACHE)(self._pem_caller)

    def client_ca_pem(self) -> bytes | None:
        """PEM bundle the TLS handshake verifies client certificates against (None: no TLS)."""
        if self.plaintext:
            return None
        from cryptography.hazmat.primitives.serialization import Encoding

        return b"".join(ca.public_bytes(Encoding.PEM) for _, ca in self._trusted)

    def admit(self, context: grpc.ServicerContext) -> Caller:
        """The caller of this RPC, or AuthenticationError / PermissionDeniedError."""
        if self.plaintext:
            return Caller(name="anonymous", roles=(), via="plaintext")
        if self.policy.mode == "token":
            caller = self.policy.tokens.verify(bearer_token(context))  # type: ignore[union-attr]
        else:
            caller = self._certificate_caller(context)
        allowed = self.policy.allowed_roles
        if allowed and not set(caller.roles) & set(allowed):
            raise PermissionDeniedError(f"{caller.name!r} (role {caller.role}) may not call "
                                        f"inference; allowed roles: {', '.join(allowed)}")
        return caller

    def _certificate_caller(self, context: grpc.ServicerContext) -> Caller:
        pem = context.auth_context().get("x509_pem_cert")
        if not pem:
            raise AuthenticationError("the call carried no verified client certificate")
        return self._caller_of_pem(pem[0])

    def _pem_caller(self, pem: bytes) -> Caller:
        certificate = x509.load_pem_x509_certificate(pem)
        via = next((source for source, ca in self._trusted if _issued_by(certificate, ca)), None)
        if via is None:  # the handshake verified it, so its issuer is an intermediate
            via = "site-ca" if self.policy.site_ca_file is not None else "federation-ca"
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        roles = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        if not names:
            raise AuthenticationError("the client certificate has no CN (the caller's name)")
        role = str(roles[0].value) if roles else DEFAULT_CERTIFICATE_ROLE
        return Caller(name=str(names[0].value), roles=(role,), via=via)


def _issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def bearer_token(context: grpc.ServicerContext) -> str:
    """The token of the call's `authorization: Bearer ...` metadata."""
    for key, value in context.invocation_metadata():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise AuthenticationError("the authorization metadata must read 'Bearer <token>'")
    raise AuthenticationError("this server takes OIDC bearer tokens: send the metadata "
                              "'authorization: Bearer <token>'")
