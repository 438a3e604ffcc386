"""What the web page is configured with (the inference config's `web` section)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.inference.callers import TokenVerifier
from ucadi.errors import UcadiError
from ucadi.ops.serving import split_address

AUTH_MODES = ("certificate", "bearer", "header", "none")
LOOPBACK_HOSTS = ("localhost",)


class WebSettingsError(UcadiError):
    """The `web` settings are inconsistent or incomplete."""


@dataclass(frozen=True)
class WebSettings:
    """The page's address, TLS files, authentication and history."""

    address: str
    tls_cert_file: Path
    tls_key_file: Path
    auth: str = "certificate"
    client_ca_file: Path | None = None
    tokens: TokenVerifier | None = field(default=None, compare=False)
    user_header: str = "X-Forwarded-User"
    role_header: str = "X-Forwarded-Groups"
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    history_db: Path = Path("var/site/web-history.sqlite")
    history_retention_days: float = 30.0

    def __post_init__(self) -> None:
        if self.auth not in AUTH_MODES:
            raise WebSettingsError(f"web.auth {self.auth!r} is not one of {', '.join(AUTH_MODES)}")
        if self.auth == "certificate" and self.client_ca_file is None:
            raise WebSettingsError("web.auth certificate needs web.client_ca_file (the PEM bundle "
                                   "of the site-local CA that issued the radiologists' "
                                   "certificates)")
        if self.auth == "bearer" and self.tokens is None:
            raise WebSettingsError("web.auth bearer needs clients.oidc_jwks_file, oidc_issuer "
                                   "and oidc_audience (the tokens' issuer and its keys)")
        if self.auth == "none" and not is_loopback(split_address(self.address)[0]):
            raise WebSettingsError(f"web.auth none serves the page to anyone: it is allowed only "
                                   f"on a loopback address, not {self.address}")
        try:
            for network in self.trusted_proxies:
                ipaddress.ip_network(network)
        except ValueError as exc:
            raise WebSettingsError(f"web.trusted_proxies: {exc}") from None
        if self.history_retention_days < 0:
            raise WebSettingsError("web.history_retention_days must be >= 0 (0 keeps no history)")


def is_loopback(host: str) -> bool:
    """Whether a listening host is reachable only from this machine."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def web_settings(settings: dict[str, Any], tokens: TokenVerifier | None) -> WebSettings | None:
    """The page's settings from the inference settings, or None when the page is off."""
    web = settings["web"]
    if not web["address"]:
        return None
    tls_dir = settings["server"]["tls_dir"]
    cert, key = web["tls_cert_file"], web["tls_key_file"]
    if not (cert and key):
        if not tls_dir:
            raise WebSettingsError("the web page is HTTPS only: set web.tls_cert_file and "
                                   "web.tls_key_file, or server.tls_dir")
        cert = cert or str(Path(tls_dir) / "tls.crt")
        key = key or str(Path(tls_dir) / "tls.key")
    return WebSettings(
        address=web["address"], tls_cert_file=Path(cert), tls_key_file=Path(key),
        auth=web["auth"],
        client_ca_file=Path(web["client_ca_file"]) if web["client_ca_file"] else None,
        tokens=tokens, user_header=web["user_header"], role_header=web["role_header"],
        trusted_proxies=tuple(web["trusted_proxies"]), history_db=Path(web["history_db"]),
        history_retention_days=float(web["history_retention_days"]))
