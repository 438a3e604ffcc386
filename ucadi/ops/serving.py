"""Start a gRPC service the same way everywhere: mTLS, health, reflection, tracing, metrics.

Servicers stay thin: they validate, call domain code and let `grpc_errors` turn a domain error
(`UcadiError` with its `status` code name) into a gRPC status with the error's message.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from ucadi.errors import UcadiError
from ucadi.ops.certificates import reloading_server_credentials
from ucadi.ops.memory import MEMORY_LIMIT, memory_limit_bytes
from ucadi.ops.tls import TLSFiles
from ucadi.ops.tracing import server_interceptors

log = logging.getLogger(__name__)

# Receivers accept 4 MiB chunks plus protobuf framing; whole models never travel in one message.
DEFAULT_MAX_MESSAGE_BYTES = 8 << 20

F = TypeVar("F", bound=Callable[..., Any])


def grpc_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Channel/server options raising the message size limits to max_message_bytes."""
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)]


def split_address(address: str) -> tuple[str, int]:
    """'host:port' -> (host, port); IPv6 hosts in brackets."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UcadiError(f"address {address!r} is not HOST:PORT (e.g. 127.0.0.1:0)")
    return host.strip("[]"), int(port)


@dataclass
class RunningServer:
    """A started gRPC server, its bound port and its metrics endpoint."""

    server: grpc.Server
    port: int
    host: str
    health: health.HealthServicer
    metrics_port: int | None = None
    health_port: int | None = None
    _metrics_httpd: Any = None
    _health_server: grpc.Server | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def target(self) -> str:
        """host:port a client dials."""
        return f"{self.host}:{self.port}"

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving: health goes NOT_SERVING, in-flight calls get `grace` seconds."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self._health_server is not None:
            self._health_server.stop(0).wait()
        if self._metrics_httpd is not None:
            self._metrics_httpd.shutdown()
            self._metrics_httpd.server_close()

    def wait(self) -> None:
        """Block until the server terminates."""
        self.server.wait_for_termination()


def wait_for_stop_signal(on_ready: Callable[[], None] | None = None) -> int:
    """Block until SIGTERM or SIGINT arrives; returns the signal number. `on_ready` runs once
    the signals are caught (a signal before that acts as it did before). The previous handlers
    are back in place on return, so a second signal during shutdown acts as it did before."""
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    stopped = threading.Event()
    try:
        received = set_on_stop_signal(stopped)
        if on_ready is not None:
            on_ready()
        stopped.wait()
        return received[0]
    finally:
        signal.set_wakeup_fd(-1)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def set_on_stop_signal(event: threading.Event) -> list[int]:
    """Set `event` when SIGTERM or SIGINT arrives; the returned list gets the signal's number.

    A handler that takes a lock (setting an Event, stopping a gRPC server) runs in the main
    thread between two bytecodes and can deadlock against a lock that same thread holds at
    that moment (seen as a service that ignores SIGTERM). So the signal is written to a socket
    at C level (`signal.set_wakeup_fd`), the Python handler does nothing, and a watcher thread
    sets the event. Call from the main thread.
    """
    receiver, sender = socket.socketpair()
    sender.setblocking(False)
    signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, _frame: None)
    received: list[int] = []

    def watch() -> None:
        received.append(receiver.recv(1)[0])
        event.set()

    threading.Thread(target=watch, name="stop-signal", daemon=True).start()
    # The sockets live as long as the process: the watcher and the wakeup fd use them.
    _SIGNAL_SOCKETS.extend((receiver, sender))
    return received


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A server closes a connection no call has used for this long (HTTP/2 GOAWAY; the client
# reconnects at its next call, one TLS handshake). Sites exchange ciphertexts with the sum
# service once a round, and an open connection keeps about 1.5 MB of transport buffers after a
# 4.7 MB upload: with 1,000 sites connected the crypto service held 1.8 GB; closing after 15 s
# it peaked at 1.1 GB, after 5 s at 0.7 GB (issue 25, docs/experiments/scale). A long poll in
# flight keeps its connection busy, so polling sites stay connected.
CONNECTION_IDLE_S = 5.0
_SIGNAL_SOCKETS: list[socket.socket] = []


def serve(register: Callable[[grpc.Server], None], *, service_names: list[str],
          address: str = "127.0.0.1:0", tls: TLSFiles | None,
          metrics_address: str | None = "127.0.0.1:0", max_workers: int = 16,
          max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
          port_file: Path | None = None,
          health_address: str | None = None,
          require_client_auth: bool = True,
          maximum_concurrent_rpcs: int | None = None,
          client_ca: bytes | None = None,
          connection_idle_s: float = CONNECTION_IDLE_S) -> RunningServer:
    """Start a gRPC server with our servicers, health checking, reflection and /metrics.

    `tls=None` serves plaintext (only for explicit local debugging); otherwise clients must
    present a certificate from the federation CA. The bound port is written to `port_file`
    when given, so a parent process can learn an OS-assigned port. `health_address` adds a
    plaintext server carrying only the health service, for probes that cannot present a
    client certificate (Kubernetes' gRPC probes); it reports the same status.
    `maximum_concurrent_rpcs` makes gRPC itself refuse excess calls with RESOURCE_EXHAUSTED.
    `client_ca` (PEM) replaces the federation CA as what client certificates are checked against.
    `connection_idle_s`: connections unused this long are closed (CONNECTION_IDLE_S).
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         interceptors=server_interceptors(),
                         options=[*grpc_options(max_message_bytes),
                                  ("grpc.max_connection_idle_ms",
                                   max(1, round(connection_idle_s * 1000)))],
                         maximum_concurrent_rpcs=maximum_concurrent_rpcs)
    register(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *service_names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    host, port = split_address(address)
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(bind)
    else:
        bound = server.add_secure_port(bind, reloading_server_credentials(
            tls, require_client_auth, client_ca))
    if bound == 0:
        raise UcadiError(f"could not bind gRPC server to {address}")
    server.start()
    running = RunningServer(server=server, port=bound, host=host, health=health_servicer)
    if health_address:
        running._health_server, running.health_port = _health_only_server(
            health_servicer, health_address)
    if metrics_address:
        MEMORY_LIMIT.set(memory_limit_bytes())
        m_host, m_port = split_address(metrics_address)
        httpd, _thread = start_http_server(m_port, addr=m_host)
        running._metrics_httpd = httpd
        running.metrics_port = httpd.server_port
    if port_file is not None:
        write_port_file(Path(port_file), running)
    log.info("serving %s on %s (metrics port %s)", ", ".join(service_names), running.target,
             running.metrics_port)
    return running


def _health_only_server(servicer: health.HealthServicer,
                        address: str) -> tuple[grpc.Server, int]:
    """A plaintext gRPC server exposing only grpc.health.v1 (no data, no other service)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    host, port = split_address(address)
    bound = server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    if bound == 0:
        raise UcadiError(f"could not bind the health port to {address}")
    server.start()
    return server, bound


def write_port_file(path: Path, running: RunningServer) -> None:
    """Atomically write 'grpc_port metrics_port' so a parent can wait for and read it."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{running.port} {running.metrics_port or 0}\n")
    tmp.replace(path)


def status_code(exc: UcadiError) -> grpc.StatusCode:
    """The gRPC status code a domain error maps to."""
    return getattr(grpc.StatusCode, exc.status, grpc.StatusCode.INVALID_ARGUMENT)


def grpc_errors(method: F) -> F:
    """Decorate a servicer method: a UcadiError aborts the call with its status and message.

    Works for unary and streaming-response methods (generators).
    """
    import inspect

    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream_wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except UcadiError as exc:
                context.abort(status_code(exc), str(exc))
        return stream_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except UcadiError as exc:
            context.abort(status_code(exc), str(exc))
    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def serving(register: Callable[[grpc.Server], None], **kwargs: Any) -> Iterator[RunningServer]:
    """`serve` as a context manager that stops the server on exit (handy in tests)."""
    running = serve(register, **kwargs)
    try:
        yield running
    finally:
        running.stop(0)
