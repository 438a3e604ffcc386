"""Who may use the page, and the rules that keep a browser session safe.

Authentication (`web.auth`):
  * certificate: a client certificate from the site-local CA (`web.client_ca_file`), verified in
    the TLS handshake; the user is its CN, the role its OU;
  * bearer: `Authorization: Bearer <JWT>` from the hospital's OIDC provider, verified like the
    gRPC ports' tokens (issuer, audience, JWKS); set by a reverse proxy such as oauth2-proxy
    (`--pass-authorization-header`);
  * header: a reverse proxy that authenticated the user (oauth2-proxy with
    `--pass-user-headers`) names it in `web.user_header`; believed only from the
    `web.trusted_proxies` addresses;
  * none: loopback addresses only (local use and tests).
CSRF: every request that changes something carries `X-CSRF-Token`, an HMAC of the user under a
per-process key that the page fetches from /api/session, and, when the browser sends an Origin,
it must be this page's own. A cross-site form can set neither.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from services.inference.callers import Caller
from services.inference.web.https import peer_certificate
from services.inference.web.settings import WebSettings
from ucadi.errors import UcadiError
from ucadi.ops.tls import AuthenticationError

CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD")
# The page loads its own script and style only; it draws images on canvases from data it
# fetches from itself. Nothing may frame it.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                           "img-src 'self'; connect-src 'self'; form-action 'self'; "
                           "base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"strict-transport-security", b"max-age=31536000"),
    (b"cache-control", b"no-store"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


class CSRFError(UcadiError):
    """A state-changing request without this page's CSRF token or from another origin."""

    status = "PERMISSION_DENIED"


@dataclass(frozen=True)
class PageAccess:
    """Recognises the page's users and checks CSRF tokens."""

    settings: WebSettings
    csrf_key: bytes = b""

    @classmethod
    def for_settings(cls, settings: WebSettings) -> PageAccess:
        """Access rules with a fresh CSRF key (tokens last as long as the process)."""
        return cls(settings, secrets.token_bytes(32))

    def user(self, scope: Scope, headers: dict[str, str]) -> Caller:
        """Who sends this request; AuthenticationError saying what the page needs."""
        auth = self.settings.auth
        if auth == "none":
            return Caller(name="local user", roles=(), via="loopback")
        if auth == "certificate":
            return certificate_user(peer_certificate(dict(scope)))
        if auth == "bearer":
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthenticationError("this page needs a sign-in through the hospital's "
                                          "identity provider (an 'Authorization: Bearer' token)")
            return self.settings.tokens.verify(token.strip())  # type: ignore[union-attr]
        return self._proxy_user(scope, headers)

    def _proxy_user(self, scope: Scope, headers: dict[str, str]) -> Caller:
        client = scope.get("client") or ("", 0)
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            address = None
        if address is None or not any(address in ipaddress.ip_network(network)
                                       for network in self.settings.trusted_proxies):
            raise AuthenticationError(f"requests from {client[0] or 'an unknown address'} are "
                                      "not from the trusted sign-in proxy; open the page "
                                      "through the hospital's sign-in address")
        name = headers.get(self.settings.user_header.lower(), "").strip()
        if not name:
            raise AuthenticationError(f"the sign-in proxy sent no {self.settings.user_header} "
                                      "header; sign in again")
        roles = headers.get(self.settings.role_header.lower(), "")
        return Caller(name=name, roles=tuple(r.strip() for r in roles.split(",") if r.strip()),
                      via="proxy-header")

    def csrf_token(self, user: Caller) -> str:
        """The CSRF token of `user` (the page sends it back with every change)."""
        return hmac.new(self.csrf_key, user.name.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, user: Caller, method: str, headers: dict[str, str]) -> None:
        """Refuse a state-changing request without the user's token or from another origin."""
        if method in SAFE_METHODS:
            return
        origin = headers.get("origin")
        host = headers.get("host", "")
        if origin is not None and origin.split("://", 1)[-1] != host:
            raise CSRFError(f"requests from {origin} may not change anything here")
        token = headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(token, self.csrf_token(user)):
            raise CSRFError("the request lacks this page's CSRF token; reload the page")


def certificate_user(certificate: dict[str, Any] | None) -> Caller:
    """The user named by a verified client certificate (ssl.getpeercert() form)."""
    if not certificate:
        raise AuthenticationError("this page needs a client certificate from the hospital's "
                                  "certificate authority; install yours in the browser and "
                                  "reload")
    subject = {key: value for rdn in certificate.get("subject", ()) for key, value in rdn}
    name = subject.get("commonName")
    if not name:
        raise AuthenticationError("the client certificate names no user (no CN)")
    role = subject.get("organizationalUnitName")
    return Caller(name=name, roles=(role,) if role else (), via="site-ca")


def with_security_headers(app: ASGIApp) -> ASGIApp:
    """Wrap an ASGI app so every HTTP response carries SECURITY_HEADERS."""
    async def wrapped(scope: Scope, receive: Callable[[], Awaitable[Any]],
                      send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *(h for h in SECURITY_HEADERS if h[0] not in names)]
            await send(message)

        await app(scope, receive, send_with_headers)
    return wrapped
