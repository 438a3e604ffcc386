"""Baseline: Flower's per-round FedAvg overhead with no training, on loopback.

Method
------
One Flower server process and ``clients`` Flower client processes are started on
127.0.0.1 (free ports), talking Flower's gRPC transport.  We use Flower's
``start_server``/``start_client`` entry points (deprecated since 1.13 but still
shipped): a real gRPC server with real client processes, and none of the
SuperLink/SuperNode polling or per-run app launching that ``flwr run`` adds, so
the figure is a lower bound on Flower's round cost.

The model is one float32 tensor of ``num_params`` values, given to FedAvg as its
initial parameters.  Each client returns the parameters it received unchanged
together with ``num_examples`` (1, 2, 3, ...) so FedAvg really computes a
weighted average; evaluation is disabled.  A FedAvg subclass on the server times
each round from the end of ``configure_fit`` (once all clients are connected) to
the end of ``aggregate_fit``: serialise, send, client decode/encode, receive,
decode, average, encode.  The median over ``rounds`` rounds is reported.

Flower pins ``protobuf<7`` while this project's venv has protobuf 7, so Flower
lives in its own venv ``.venv-flower`` (``pip install flwr==1.41.0``; 1.42.0
needs a certifi release that the package index does not have); this module
re-runs itself there as the server and client subprocesses.  Every process it
starts is stopped on success, error or timeout.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOWER_VENV_PYTHON = REPO / ".venv-flower" / "bin" / "python"
RESULT_MARKER = "FLOWER_ROUND_SECONDS "
INSTALL_HINT = "python3.11 -m venv .venv-flower && .venv-flower/bin/pip install flwr==1.41.0"


def _flower_python() -> str:
    """Return an interpreter that can import flwr, or raise RuntimeError."""
    for candidate in (str(FLOWER_VENV_PYTHON), sys.executable):
        if Path(candidate).exists():
            probe = subprocess.run(
                [candidate, "-c", "import flwr"], capture_output=True, timeout=120
            )
            if probe.returncode == 0:
                return candidate
    raise RuntimeError(f"Flower is not installed; run: {INSTALL_HINT}")


def _free_port() -> int:
    """Return a currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, server: subprocess.Popen, deadline: float) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("Flower server did not start listening")


def _stop(procs: list[subprocess.Popen]) -> None:
    """Terminate, then kill if needed, every process we started."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure_flower_round_seconds(
    num_params: int, rounds: int = 3, clients: int = 3, timeout_s: float = 300,
    tls: bool = False,
) -> float:
    """Median wall seconds per Flower FedAvg round (no training) on loopback; `tls`: over TLS
    (Flower's legacy API authenticates the server only), with a CA and a certificate for
    127.0.0.1 made here by `ucadi pki`."""
    python = _flower_python()
    port = _free_port()
    deadline = time.monotonic() + timeout_s
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    me = str(Path(__file__).resolve())
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="flower_bench_") as tmp:
        tls_args = [_issue_server_certificate(Path(tmp))] if tls else []
        out_path, err_path = Path(tmp, "server.out"), Path(tmp, "server.err")
        try:
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                procs.append(
                    subprocess.Popen(
                        [
                            python,
                            me,
                            "server",
                            str(port),
                            str(num_params),
                            str(rounds),
                            str(clients),
                            *tls_args,
                        ],
                        stdout=out,
                        stderr=err,
                        env=env,
                        cwd=tmp,
                    )
                )
            _wait_listening(port, procs[0], deadline)
            for i in range(clients):
                procs.append(
                    subprocess.Popen(
                        [python, me, "client", str(port), str(i + 1), *tls_args],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        env=env,
                        cwd=tmp,
                    )
                )
            try:
                code = procs[0].wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"Flower run exceeded {timeout_s:.0f} s ({num_params} params, {rounds} rounds)"
                ) from None
        finally:
            _stop(procs)
        stdout = out_path.read_text(errors="replace")
        lines = [ln for ln in stdout.splitlines() if ln.startswith(RESULT_MARKER)]
        if code != 0 or not lines:
            tail = err_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Flower server failed (exit {code}):\n{tail}")
    return statistics.median(json.loads(lines[-1][len(RESULT_MARKER) :]))


def _issue_server_certificate(folder: Path) -> str:
    """A federation-style CA and a server certificate for 127.0.0.1 under `folder`; the folder
    holding ca.crt, tls.crt and tls.key."""
    from ucadi.ops.pki import create_ca, issue_certificate

    create_ca(folder / "ca")
    issue_certificate(folder / "ca", folder / "server", "flower-server", "service")
    return str(folder / "server")


def _read_tls(folder: str) -> tuple[bytes, bytes, bytes]:
    """(CA, certificate, key) PEM bytes of a folder made by _issue_server_certificate."""
    return tuple(Path(folder, name).read_bytes()  # type: ignore[return-value]
                 for name in ("ca.crt", "tls.crt", "tls.key"))


def _serve(port: int, num_params: int, rounds: int, clients: int, tls_dir: str = "") -> None:
    """Run the Flower server (in the Flower venv) and print per-round seconds."""
    import flwr as fl
    import numpy as np
    from flwr.common import FitIns, FitRes, Parameters, Scalar
    from flwr.server.client_manager import ClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.strategy import FedAvg

    durations: list[float] = []

    class TimedFedAvg(FedAvg):
        """FedAvg that records wall time from configure_fit to aggregate_fit."""

        def configure_fit(
            self, server_round: int, parameters: Parameters, client_manager: ClientManager
        ) -> list[tuple[ClientProxy, FitIns]]:
            """Sample clients (waits for them), then start the round clock."""
            instructions = super().configure_fit(server_round, parameters, client_manager)
            self._t0 = time.perf_counter()
            return instructions

        def aggregate_fit(
            self,
            server_round: int,
            results: list[tuple[ClientProxy, FitRes]],
            failures: list[tuple[ClientProxy, FitRes] | BaseException],
        ) -> tuple[Parameters | None, dict[str, Scalar]]:
            """Aggregate as FedAvg, then stop the round clock."""
            if failures:
                raise RuntimeError(f"round {server_round}: {len(failures)} client failures")
            aggregated = super().aggregate_fit(server_round, results, failures)
            durations.append(time.perf_counter() - self._t0)
            return aggregated

    weights = np.random.default_rng(0).standard_normal(num_params, dtype=np.float32)
    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=clients,
        min_available_clients=clients,
        initial_parameters=fl.common.ndarrays_to_parameters([weights]),
    )
    fl.server.start_server(
        server_address=f"127.0.0.1:{port}",
        strategy=strategy,
        config=fl.server.ServerConfig(num_rounds=rounds),
        certificates=_read_tls(tls_dir) if tls_dir else None,
    )
    if len(durations) != rounds:
        raise RuntimeError(f"only {len(durations)} of {rounds} rounds completed")
    print(RESULT_MARKER + json.dumps(durations), flush=True)


def _client(port: int, num_examples: int, tls_dir: str = "") -> None:
    """Run one Flower client that echoes the received parameters (no training)."""
    import flwr as fl
    from flwr.common import NDArrays, Scalar

    class EchoClient(fl.client.NumPyClient):
        """Returns the global parameters unchanged with a fixed example count."""

        def fit(
            self, parameters: NDArrays, config: dict[str, Scalar]
        ) -> tuple[NDArrays, int, dict[str, Scalar]]:
            """Echo parameters back; FedAvg weights them by num_examples."""
            return parameters, num_examples, {}

    fl.client.start_client(
        server_address=f"127.0.0.1:{port}", client=EchoClient().to_client(),
        insecure=not tls_dir,
        root_certificates=_read_tls(tls_dir)[0] if tls_dir else None,
    )


def run(quick: bool) -> list[str]:
    """Measure Flower round time for 0.73 M (and, unless quick, 46 M) params."""
    cases = [(730_000, 3, 300.0)] + ([] if quick else [(46_000_000, 2, 300.0)])
    lines: list[str] = []
    for num_params, rounds, timeout_s in cases:
        label = f"flower fedavg 3 clients, {num_params / 1e6:.2f} M params"
        try:
            seconds = measure_flower_round_seconds(num_params, rounds, 3, timeout_s)
            lines.append(f"{label}: {seconds:.2f} s/round (median of {rounds})")
        except RuntimeError as exc:
            lines.append(f"{label}: skipped ({str(exc).splitlines()[0]})")
        print(lines[-1], flush=True)
    return lines


if __name__ == "__main__":
    role, args = sys.argv[1], [a if a.startswith("/") else int(a) for a in sys.argv[2:]]
    {"server": _serve, "client": _client}[role](*args)
