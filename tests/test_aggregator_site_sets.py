"""Compact site sets (issue 25): a site's GetRound and status replies name the round's sites as
bitmaps over a roster it caches by digest, so they stop growing by a name per site for every
site; a real aggregator over mutual TLS answers them, and the names decode to what the lists
said."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from test_aggregator_rounds import VALUES, Clock, coordinator, upload
from test_status_cli import start_unencrypted_aggregator

from services.aggregator.contracts import COLLECTING
from services.trainer.client import FederationClient
from ucadi.errors import UcadiError
from ucadi.lwe import generate_secret_key
from ucadi.ops.tls import TLSFiles, secure_channel
from ucadi.v1 import federation_pb2, federation_pb2_grpc
from ucadi.wire.roster import Roster, RosterCache, roster_digest

SITES = ("main-campus", "optical-valley", "sino-french")


@pytest.fixture(scope="module")
def secret():
    return generate_secret_key()


def test_a_site_set_round_trips_over_its_roster_and_refuses_another() -> None:
    roster = Roster.of([f"site-{k:04d}" for k in range(1000)] + ["site-0001"])
    assert len(roster.names) == 1000 and roster.digest == roster_digest(roster.names)
    members = [f"site-{k:04d}" for k in range(0, 1000, 3)]
    bitmap = roster.encode(reversed(members))
    assert len(bitmap) == 125
    assert roster.decode(roster.digest, bitmap) == members
    with pytest.raises(UcadiError, match="'elsewhere' is not on the federation's roster"):
        roster.encode(["site-0002", "elsewhere"])
    with pytest.raises(UcadiError, match="refers to another roster"):
        Roster.of(["a", "b"]).decode(roster.digest, bitmap)
    with pytest.raises(UcadiError, match="124 bytes does not fit a roster of 1000 sites"):
        roster.decode(roster.digest, bitmap[:-1])

    cache = RosterCache()
    carried = federation_pb2.Roster(digest=roster.digest, sites=roster.names)
    site_set = federation_pb2.SiteSet(roster_digest=roster.digest, members=bitmap)
    assert cache.names(site_set, carried) == members and cache.digest == roster.digest
    assert cache.names(site_set, None) == members  # held now: no roster needed
    forged = federation_pb2.Roster(digest=roster_digest(["x"]), sites=["y"])
    with pytest.raises(UcadiError, match="does not match its digest"):
        cache.names(site_set, forged)


def test_a_site_gets_its_rounds_sites_as_sets_and_the_roster_only_when_it_changed(
        tmp_path: Path, federation_pki: Path) -> None:
    running, coordinator = start_unencrypted_aggregator(tmp_path / "state", federation_pki)
    clients = {site: FederationClient(running.target, TLSFiles.from_dir(federation_pki / site),
                                      retry_budget_s=30, rpc_timeout_s=30)
               for site in SITES}
    try:
        for site in SITES[:2]:
            clients[site].join(40, "test")
        deadline = time.monotonic() + 30
        while coordinator.view().round < 1:
            assert time.monotonic() < deadline, "round 1 never opened"
            time.sleep(0.1)
        first = clients["main-campus"]
        info = first.get_round()
        assert info.HasField("roster") and list(info.roster.sites) == list(SITES[:2])
        assert list(info.expected_sites) == list(SITES[:2]) and list(info.uploaded_sites) == []
        assert info.expected.members == bytes([0b11]) and info.awaiting_caller

        # The roster held is current: the reply carries sets only, a few bytes per 8 sites.
        wanted = federation_pb2.SiteSetsWanted(compact=True, roster_digest=first.roster.digest)
        again = first.stub.GetRound(federation_pb2.GetRoundRequest(site_sets=wanted), timeout=30)
        assert not again.HasField("roster") and not again.expected_sites
        assert again.expected.members == bytes([0b11])

        # A third site joins mid-round: the roster changes, and the next reply carries it.
        clients["sino-french"].join(10, "test")
        info = first.get_round()
        assert info.HasField("roster") and list(info.expected_sites) == list(SITES)
        assert first.get_round().HasField("roster") is False

        # A site's status view: no per-site rows, the round's sites as sets.
        sites = first.round_sites(1)
        assert sites.expected == SITES and sites.uploaded == () and sites.known == SITES
        compact = first.stub.GetStatus(federation_pb2.GetStatusRequest(
            round=1, site_sets=federation_pb2.SiteSetsWanted(
                compact=True, roster_digest=first.roster.digest)), timeout=30)
        assert not compact.sites and not compact.HasField("roster")
        assert not compact.rounds[0].expected_sites and compact.rounds[0].expected.members

        # Callers that do not ask for sets (operators, older sites) still get the name lists.
        with secure_channel(running.target, TLSFiles.from_dir(federation_pki / "operator")) as ch:
            full = federation_pb2_grpc.FederationServiceStub(ch).GetStatus(
                federation_pb2.GetStatusRequest(round=1), timeout=30)
        assert [s.site for s in full.sites] == list(SITES)
        assert list(full.rounds[0].expected_sites) == list(SITES)
        assert not full.rounds[0].HasField("expected") and not full.HasField("roster")
    finally:
        for client in clients.values():
            client.close()
        coordinator.stop()
        running.stop(0)


def test_the_rounds_view_is_built_once_per_change_however_many_sites_ask(
        tmp_path: Path, secret, monkeypatch) -> None:
    """Every site's poll answers from one view per change of the round (its site lists are
    O(sites) to build: 1,000 sites polling made it O(sites^2) per round)."""
    coord = coordinator(tmp_path / "agg", secret, Clock(), min_sites=3)
    for site in ("a", "b", "c"):
        coord.join(site, 5)
    coord.step()
    built: list[int] = []
    real = coord.core._build_view
    monkeypatch.setattr(coord.core, "_build_view", lambda: (built.append(1), real())[1])
    views = [coord.view() for _ in range(50)]
    assert len(built) == 1 and all(v is views[0] for v in views)
    upload(coord, secret, tmp_path, "a", np.zeros(VALUES), 5)
    assert coord.view().uploaded == ["a"] and len(built) == 2
    # A change stored without notify() still shows: the round and state are read each time.
    current = coord.core.current()
    current.state = "sealing"
    coord.store.update_round(current)
    assert coord.view().state == "sealing" and len(built) == 3
    assert views[0].state == COLLECTING  # a view handed out is never changed
