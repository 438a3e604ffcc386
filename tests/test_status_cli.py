"""`ucadi status` asks a real aggregator (mutual TLS, SQLite) for its federation's state with
the operator's certificate; what it calls stuck is what the alerts call stuck."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest

from services.aggregator.config import DEFAULTS
from services.aggregator.server import start_aggregator
from ucadi.cli import main
from ucadi.ops.status_cli import findings
from ucadi.ops.tls import TLSFiles, secure_channel
from ucadi.v1 import federation_pb2, federation_pb2_grpc


def start_unencrypted_aggregator(state_dir: Path, pki: Path):
    """A real aggregator (mutual TLS, SQLite) of federation covid-ct, 2 of 3 rounds' sites
    needed, encryption off, on an OS-assigned port; returns (server, coordinator)."""
    config = copy.deepcopy(DEFAULTS)
    config["federation"].update(id="covid-ct", min_sites=2, total_rounds=3)
    config["encryption"]["enabled"] = False
    config["server"].update(state_dir=str(state_dir), address="127.0.0.1:0",
                            metrics_address="", tls_dir=str(pki / "aggregator"),
                            crypto_address="")
    return start_aggregator(config)


def test_status_shows_the_round_and_the_sites_of_a_running_aggregator(
        tmp_path: Path, federation_pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    running, coordinator = start_unencrypted_aggregator(tmp_path / "state", federation_pki)
    try:
        for site, cases in (("main-campus", 40), ("optical-valley", 25)):
            with secure_channel(running.target, TLSFiles.from_dir(federation_pki / site)) as ch:
                federation_pb2_grpc.FederationServiceStub(ch).Join(
                    federation_pb2.JoinRequest(train_cases=cases), timeout=30)
        deadline = time.monotonic() + 30
        while coordinator.view().round < 1:
            assert time.monotonic() < deadline, "round 1 never opened"
            time.sleep(0.1)
        assert main(["status", "--aggregator", running.target, "--tls-dir",
                     str(federation_pki / "operator")]) == 0
    finally:
        coordinator.stop()
        running.stop(0)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "federation covid-ct: round 1 of 3, collecting, global version 0"
    assert out[1].startswith("  uploads 0 of 2 expected (min_sites 2); deadline ")
    sites = [line.split()[0] for line in out if line.startswith("  ") and "cases" in line]
    assert sites == ["main-campus", "optical-valley"]
    assert out[-1] == "nothing stuck"


def test_an_unreachable_aggregator_is_one_line_and_exit_1(
        federation_pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--aggregator", "127.0.0.1:1", "--tls-dir",
                 str(federation_pki / "operator"), "--timeout", "2"]) == 1
    assert capsys.readouterr().err.startswith("ucadi status: error: aggregator 127.0.0.1:1: ")


def test_stuck_rounds_and_sites_behind_are_what_the_alerts_watch() -> None:
    now = 10_000.0
    status = federation_pb2.FederationStatus(
        federation_id="f", total_rounds=9,
        current=federation_pb2.RoundInfo(round=6, state=federation_pb2.ROUND_STATE_COLLECTING,
                                         deadline_unix=now - 301, expected_sites=["a", "b"],
                                         uploaded_sites=["a"], min_sites=2),
        sites=[federation_pb2.SiteStatus(site="a", state="active", last_round=6),
               federation_pb2.SiteStatus(site="b", state="active", last_round=3),
               federation_pb2.SiteStatus(site="c", state="left", last_round=1)])
    assert findings(status, now) == [
        "round 6 has been collecting 301 s past its deadline (1 of 2 uploads, min_sites 2)",
        "site b last uploaded to round 3, 3 rounds behind"]
    status.current.state = federation_pb2.ROUND_STATE_SEALED
    status.rounds.add(round=6, sealed_unix=now - 400)
    assert findings(status, now)[0] == ("round 6 was sealed 400 s ago and no next round "
                                        "opened (are min_sites sites polling?)")
    status.current.deadline_unix = now
    status.sites[1].last_round = 5
    status.rounds[0].sealed_unix = now - 10
    assert findings(status, now) == []
