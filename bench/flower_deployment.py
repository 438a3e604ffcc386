"""Baseline: Flower's per-round FedAvg overhead via its current deployment path.

Method
------
The same measurement as ``bench/flower_baseline.py`` (no training, one float32
tensor of ``num_params`` values, ``clients`` echo clients answering with
``num-examples`` 1, 2, 3, ... so FedAvg really averages, evaluation disabled,
median of per-round wall seconds), but driven the way Flower 1.41 documents a
real deployment instead of through the deprecated ``start_server`` /
``start_client`` entry points:

* one ``flower-superlink --insecure`` (state in a SQLite file in a temp dir),
* ``clients`` ``flower-supernode --insecure`` processes, each with its own
  Runtime (ex "ClientAppIo") API port and ``--node-config num-examples=<i>``,
* ``flwr run <app> bench`` submitting a generated Flower App (``pyproject.toml``
  with ``[tool.flwr.app.components]`` for a ServerApp and a ClientApp) to the
  SuperLink's Control API.

Everything listens on 127.0.0.1 with ports the OS reports free.  In Flower
1.41 the SuperLink serves the Control, Fleet and Runtime APIs as HTTP on a
single uvicorn port (``flwr/superlink/cli/flower_superlink.py``:
``--fleet-api-type``/``--control-api-address`` are "Deprecated. The ... API
now operates over HTTP"; the gRPC Fleet server only starts behind the internal
``FLWR_INTERNAL_GRPC_FLEET_API=1`` switch) and SuperNodes talk to it with
``flwr/supernode/fleet_http_connection.py``, so the wire protocol measured here
is Flower's HTTP transport (protobuf bodies), not gRPC.

The ``flwr`` CLI reads its SuperLink connection from ``$FLWR_HOME/config.toml``
(``flwr/cli/flower_config.py``); the legacy ``[tool.flwr.federations]`` table is
only migrated into that file.  We therefore write ``config.toml`` with a
``[superlink.bench]`` connection (``address``, ``insecure = true``) into a
``FLWR_HOME`` inside the temp dir; the SuperLink, SuperNodes and their app
processes get the same ``FLWR_HOME`` (FABs are installed under it), so nothing
is written to ``~/.flwr``.  The update check and telemetry are disabled and
``--disable-runtime-dependency-installation`` stops the SuperLink from running
``uv sync`` for the app, so only loopback traffic happens.

What is timed
-------------
The ServerApp runs the Message-API ``flwr.serverapp.strategy.FedAvg`` subclassed
to time each round from the end of ``configure_train`` (nodes sampled, messages
built) to the end of ``aggregate_train``, i.e. ``Grid.send_and_receive`` plus
aggregation: push to SuperLink, SuperNode pull, ClientApp launch and run, reply
push, ServerApp pull, FedAvg.  It writes the per-round seconds as JSON to a
path given in the run config (``result-path``); the parent polls that file.

Why it is slow (Flower 1.41.0 source, all defaults left as shipped)
-------------------------------------------------------------------
* ``HttpGrid.send_and_receive`` (``flwr/superlink/grid/http_grid.py``) pulls
  replies, then ``time.sleep(3)`` between pulls: the ServerApp sees replies only
  on a 3 s grid.
* The SuperNode loop ``start_client_internal``
  (``flwr/supernode/start_client_internal.py``) asks the SuperLink for a
  message and ``time.sleep(3)`` when there is none; ``_push_messages`` then
  waits for the ClientApp's reply in ``time.sleep(0.5)`` steps.
* The SuperNode's SuperExec polls for tasks every
  ``_DEFAULT_TASK_POLL_INTERVAL_SECONDS = 1.0`` s
  (``flwr/supercore/superexec/run_superexec.py``, env
  ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``) and, with the default subprocess
  executor, starts a fresh ``flwr-clientapp`` Python process for every message
  (``flwr/supernode/runtime/run_clientapp.py``: pull task, install the FAB,
  load the ClientApp, reply, exit).
* Objects are content-addressed (``flwr/supercore/object_store``): a reply
  whose array chunks the receiver still holds is not re-uploaded.  Echo
  clients return the global array unchanged, as in ``flower_baseline.py``.

A round is therefore several seconds of polling regardless of model size: the
ClientApps start 3-5 s after the push (SuperNode poll + SuperExec poll + about
1.5 s of ``flwr-clientapp`` start-up and imports) and the ServerApp collects the
replies on its third pull, so 0.73 M params with 3 clients take about 6.5 s per
round on a 2-core machine.
Flower pins ``protobuf<7``, so every Flower process runs from ``.venv-flower``
(see ``bench.flower_baseline``); this module itself only uses the standard
library.  Every process started (SuperLink, SuperNodes, ``flwr run``) gets its
own session, and on success, error or timeout the whole family - including the
SuperExec/ServerApp/ClientApp processes Flower detaches into new sessions - is
terminated, then killed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.flower_baseline import _flower_python, _free_port, _stop, _wait_listening

# The ServerApp and ClientApp sources, copied into the generated Flower App project.
FLOWER_APP = Path(__file__).resolve().parent / "flower_app"
CONNECTION = "bench"
POLL_S = 0.25
LOG_TAIL = 3000

PYPROJECT = """\
[project]
name = "ucadi-flower-bench"
version = "1.0.0"
description = "Flower per-round FedAvg overhead benchmark (no training)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "ucadi"

[tool.flwr.app.components]
serverapp = "benchapp.server_app:app"
clientapp = "benchapp.client_app:app"

[tool.flwr.app.config]
num-params = {num_params}
num-rounds = {rounds}
num-clients = {clients}
round-timeout = {timeout_s}
result-path = "{result_path}"
"""

FLOWER_CONFIG = """\
[superlink]
default = "{name}"

[superlink.{name}]
address = "127.0.0.1:{port}"
insecure = true
"""




def _proc_table() -> dict[int, tuple[int, int]]:
    """Map pid -> (parent pid, session id) for every live process (Linux /proc)."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), int(fields[3]))
    return table


def _family(roots: set[int], sessions: set[int]) -> set[int]:
    """Return live pids among roots, their descendants and their sessions.

    ``sessions`` is updated in place with every session seen, so processes that
    Flower detaches (``start_new_session``) and that later lose their parent are
    still found on the next call.
    """
    own_session = os.getsid(0)
    table = _proc_table()
    family = {pid for pid in roots if pid in table}
    sessions.update(roots)
    changed = True
    while changed:
        changed = False
        for pid, (ppid, sid) in table.items():
            if pid != os.getpid() and pid not in family and (ppid in family or sid in sessions):
                family.add(pid)
                if sid != own_session:
                    sessions.add(sid)
                changed = True
    return family


def _signal_all(pids: set[int], sig: int) -> None:
    """Send sig to each pid, ignoring ones that are already gone."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _stop_family(procs: list[subprocess.Popen], sessions: set[int]) -> None:
    """Terminate, then kill, our processes and everything Flower spawned from them."""
    roots = {proc.pid for proc in procs}
    _signal_all(_family(roots, sessions), signal.SIGTERM)
    end = time.monotonic() + 5
    while time.monotonic() < end and _family(roots, sessions) - roots:
        time.sleep(0.2)
    _signal_all(_family(roots, sessions) - roots, signal.SIGKILL)
    _stop(procs)  # reap direct children (kill if SIGTERM was not enough)
    _signal_all(_family(set(), sessions), signal.SIGKILL)


def _tail(path: Path) -> str:
    """Return the last LOG_TAIL characters of a log file (or a note if missing)."""
    try:
        return path.read_text(errors="replace")[-LOG_TAIL:]
    except OSError:
        return f"(no log at {path})"


def _free_ports(count: int) -> list[int]:
    """Return count distinct currently free ports on 127.0.0.1."""
    ports: list[int] = []
    while len(ports) < count:
        port = _free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _write_app(root: Path, num_params: int, rounds: int, clients: int, timeout_s: float) -> Path:
    """Write the Flower App project and return the path of its result file."""
    result_path = root.parent / "result.json"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(FLOWER_APP, root / "benchapp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "pyproject.toml").write_text(
        PYPROJECT.format(
            num_params=num_params,
            rounds=rounds,
            clients=clients,
            timeout_s=float(timeout_s),
            result_path=result_path.as_posix(),
        )
    )
    return result_path


def _run_deployment(num_params: int, rounds: int, clients: int, timeout_s: float) -> list[float]:
    """Start SuperLink, SuperNodes and ``flwr run``; return the per-round seconds."""
    bindir = Path(_flower_python()).parent
    for tool in ("flower-superlink", "flower-supernode", "flwr", "flower-superexec"):
        if not (bindir / tool).exists():
            raise RuntimeError(f"Flower CLI {tool} not found in {bindir}")
    deadline = time.monotonic() + timeout_s
    link_port, *node_ports = _free_ports(1 + clients)
    procs: list[subprocess.Popen] = []
    sessions: set[int] = set()
    with tempfile.TemporaryDirectory(prefix="flower_deploy_") as tmp_dir:
        tmp = Path(tmp_dir)
        home, logs, state = tmp / "flwr_home", tmp / "logs", tmp / "state"
        for folder in (home, logs, state):
            folder.mkdir()
        (home / "config.toml").write_text(FLOWER_CONFIG.format(name=CONNECTION, port=link_port))
        result_path = _write_app(tmp / "app", num_params, rounds, clients, timeout_s)
        env = {
            **os.environ,
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
            # SuperLink/SuperNode launch flower-superexec, flwr-serverapp and
            # flwr-clientapp by name, so the Flower venv must come first on PATH.
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        env.pop("VIRTUAL_ENV", None)

        def start(name: str, cmd: list[str]) -> subprocess.Popen:
            with open(logs / f"{name}.log", "wb") as log:
                proc = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=tmp,
                    start_new_session=True,
                )
            procs.append(proc)
            return proc

        def fail(what: str, log_name: str) -> RuntimeError:
            return RuntimeError(
                f"{what}; tail of {log_name}.log:\n{_tail(logs / f'{log_name}.log')}"
            )

        try:
            superlink = start(
                "superlink",
                [
                    str(bindir / "flower-superlink"),
                    "--insecure",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(link_port),
                    "--database",
                    str(state / "superlink.db"),
                    "--disable-runtime-dependency-installation",
                ],
            )
            try:
                _wait_listening(link_port, superlink, deadline)
            except RuntimeError:
                raise fail(f"flower-superlink did not listen on {link_port}", "superlink") from None
            nodes = [
                start(
                    f"supernode{i}",
                    [
                        str(bindir / "flower-supernode"),
                        "--insecure",
                        "--superlink",
                        f"127.0.0.1:{link_port}",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--node-config",
                        f"num-examples={i}",
                    ],
                )
                for i, port in enumerate(node_ports, start=1)
            ]
            runner = start("flwr_run", [str(bindir / "flwr"), "run", str(tmp / "app"), CONNECTION])
            try:
                code = runner.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise fail(
                    f"flwr run did not return within {timeout_s:.0f} s", "flwr_run"
                ) from None
            if code != 0:
                raise fail(f"flwr run failed (exit {code})", "flwr_run")
            last_scan = 0.0
            while not result_path.exists():
                if time.monotonic() > deadline:
                    raise fail(
                        f"Flower run exceeded {timeout_s:.0f} s "
                        f"({num_params} params, {rounds} rounds, {clients} clients)",
                        "superlink",
                    )
                if superlink.poll() is not None:
                    raise fail(f"flower-superlink exited ({superlink.returncode})", "superlink")
                for i, node in enumerate(nodes, start=1):
                    if node.poll() is not None:
                        raise fail(
                            f"flower-supernode {i} exited ({node.returncode})", f"supernode{i}"
                        )
                if time.monotonic() - last_scan > 2:  # remember detached sessions
                    _family({p.pid for p in procs}, sessions)
                    last_scan = time.monotonic()
                time.sleep(POLL_S)
            payload = json.loads(result_path.read_text())
            if "error" in payload:
                raise RuntimeError(
                    f"Flower ServerApp failed:\n{payload['error'][-LOG_TAIL:]}\n"
                    f"tail of superlink.log:\n{_tail(logs / 'superlink.log')}"
                )
            return [float(s) for s in payload["round_seconds"]]
        finally:
            _stop_family(procs, sessions)


def measure_flower_deployment_round_seconds(
    num_params: int, rounds: int = 5, clients: int = 3, timeout_s: float = 600
) -> float:
    """Median wall seconds per Flower FedAvg round (no training) via SuperLink/SuperNodes."""
    return statistics.median(_run_deployment(num_params, rounds, clients, timeout_s))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=730_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    started = time.monotonic()
    seconds = _run_deployment(args.params, args.rounds, args.clients, args.timeout)
    print("per-round seconds:", " ".join(f"{s:.3f}" for s in seconds))
    print(f"median: {statistics.median(seconds):.3f} s/round")
    print(f"wall incl. startup/shutdown: {time.monotonic() - started:.1f} s")
