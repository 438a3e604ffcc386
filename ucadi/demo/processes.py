"""Start UCADI services as child processes and learn their OS-assigned ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ucadi.errors import UcadiError


class ServiceStartError(UcadiError):
    """A service process exited or did not report its port in time."""


@dataclass
class ServiceProcess:
    """A running `ucadi serve <service>` child process."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0
    metrics_port: int = 0
    _log: object = field(default=None, repr=False)

    @property
    def target(self) -> str:
        """host:port of its gRPC endpoint."""
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL at once (a crash, for resumption tests)."""
        if self.alive():
            self.process.kill()
            self.process.wait(5)

    def tail(self, lines: int = 20) -> str:
        """The last lines of its log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_service(name: str, service: str, args: list[str], run_dir: Path,
                  env: dict[str, str] | None = None, timeout: float = 120.0) -> ServiceProcess:
    """Run `python -m ucadi.cli serve <service> ARGS --port-file F` and wait for its port."""
    run_dir.mkdir(parents=True, exist_ok=True)
    port_file = run_dir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    log_path = run_dir / f"{name}.log"
    log = open(log_path, "ab")
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "ucadi.cli", "serve", service, *args, "--port-file",
         str(port_file)], stdout=log, stderr=subprocess.STDOUT, env=child_env,
        start_new_session=True)
    started = ServiceProcess(name, process, log_path, _log=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists():
            grpc_port, metrics_port = port_file.read_text().split()
            started.port, started.metrics_port = int(grpc_port), int(metrics_port)
            return started
        if not started.alive():
            raise ServiceStartError(f"{name} exited with code {process.returncode} before "
                                    f"serving; its log ends:\n{started.tail()}")
        time.sleep(0.1)
    started.kill()
    raise ServiceStartError(f"{name} did not report its port within {timeout:.0f} s; its log "
                            f"ends:\n{started.tail()}")
