"""uvicorn over TLS in a background thread, remembering each connection's client certificate.

ASGI scopes carry no TLS details, so the HTTP protocol below records the verified peer
certificate of each connection under its (host, port), which the request's scope names;
`peer_certificate(scope)` reads it back for `access.py`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from services.inference.web.settings import WebSettings
from ucadi.errors import UcadiError
from ucadi.ops.serving import split_address

# (client host, client port) -> the verified certificate (ssl.getpeercert() form).
_PEER_CERTIFICATES: dict[tuple[str, int], dict[str, Any]] = {}
STARTUP_TIMEOUT_S = 30.0


class CertificateRecordingH11(H11Protocol):
    """h11 HTTP/1.1 that records the connection's verified client certificate, if any."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Record the client certificate the TLS handshake verified."""
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        certificate = ssl_object.getpeercert() if ssl_object is not None else None
        if certificate and self.client:
            _PEER_CERTIFICATES[tuple(self.client)] = certificate

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection's certificate."""
        if self.client:
            _PEER_CERTIFICATES.pop(tuple(self.client), None)
        super().connection_lost(exc)


def peer_certificate(scope: dict[str, Any]) -> dict[str, Any] | None:
    """The verified client certificate of the request's connection, or None."""
    client = scope.get("client")
    return _PEER_CERTIFICATES.get(tuple(client)) if client else None


class WebServer:
    """The page's HTTPS server, running until `stop`."""

    def __init__(self, app: Any, settings: WebSettings) -> None:
        host, port = split_address(settings.address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as exc:
            self.socket.close()
            raise UcadiError(f"could not bind the web page to {settings.address}: {exc}") from None
        self.host, self.port = host, self.socket.getsockname()[1]
        config = uvicorn.Config(
            app, http=CertificateRecordingH11, lifespan="off", access_log=False,
            log_level="warning",
            # The client address must be the connection's: header mode trusts proxies by it.
            proxy_headers=False, server_header=False, ssl_certfile=str(settings.tls_cert_file),
            ssl_keyfile=str(settings.tls_key_file),
            ssl_ca_certs=str(settings.client_ca_file) if settings.client_ca_file else None,
            # Optional, not required: a browser without a certificate gets a readable page
            # saying which certificate it needs instead of a failed handshake.
            ssl_cert_reqs=ssl.CERT_OPTIONAL if settings.auth == "certificate" else ssl.CERT_NONE)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       name="web-page", daemon=True)

    @property
    def url(self) -> str:
        """The page's address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}/"

    def start(self) -> WebServer:
        """Serve in the background; returns once the server accepts connections."""
        self.thread.start()
        deadline = threading.Event()
        for _ in range(int(STARTUP_TIMEOUT_S / 0.02)):
            if self.server.started or not self.thread.is_alive():
                break
            deadline.wait(0.02)
        if not self.server.started:
            raise UcadiError(f"the web page did not start on {self.url} (see the log above)")
        return self

    def stop(self) -> None:
        """Stop accepting, finish open requests, join the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()
