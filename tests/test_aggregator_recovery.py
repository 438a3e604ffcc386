"""The aggregator after a crash or during an outage of the crypto service: it finishes what a
crash interrupted, and an outage costs log lines only when it starts and ends. In-process;
tests/test_federation_crashes.py kills real processes at the same moments."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY
from test_aggregator_rounds import (
    VALUES,
    Clock,
    coordinator,
    make_config,
    seal_first_round,
    upload,
)

from services.aggregator import rounds
from services.aggregator.contracts import COLLECTING, COMPLETED, SEALED
from services.aggregator.coordinator import RoundCoordinator
from services.aggregator.local_backend import LocalSumBackend, read_facts
from services.aggregator.store import AggregatorStore
from ucadi.errors import UcadiError
from ucadi.lwe import generate_secret_key
from ucadi.ops import faults


@pytest.fixture(scope="module")
def secret():
    return generate_secret_key()


class OutageBackend(LocalSumBackend):
    """A sum service that is away (every seal answers UNAVAILABLE) until `back` is set."""

    def __init__(self, store: AggregatorStore) -> None:
        super().__init__(store)
        self.back = threading.Event()
        self.refused = 0

    def seal(self, round_number: int, out_path: Path, sites=()) -> None:
        if not self.back.is_set():
            self.refused += 1
            raise UcadiError("crypto service: UNAVAILABLE: failed to connect to all addresses")
        super().seal(round_number, out_path, sites)


def test_a_crypto_service_outage_is_one_warning_line_and_one_line_when_it_ends(
        tmp_path, secret, caplog, monkeypatch):
    monkeypatch.setattr(rounds, "STEP_RETRY_S", 0.01)
    store = AggregatorStore(tmp_path / "agg")
    backend = OutageBackend(store)
    coord = RoundCoordinator(make_config(secret), store, backend, read_facts, clock=Clock())
    for site in ("a", "b"):
        coord.join(site, 5)
    coord.step()
    for site in ("a", "b"):
        upload(coord, secret, tmp_path, site, np.ones(VALUES), 5)
    caplog.set_level(logging.INFO, logger=rounds.__name__)
    coord.start()
    try:
        deadline = time.monotonic() + 30
        while backend.refused < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert backend.refused >= 5, "the loop keeps retrying the seal"
        backend.back.set()
        while coord.view().latest_version < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        coord.stop()
    assert coord.view().latest_version == 1, "the round seals once the sum service is back"
    failed = [r for r in caplog.records if "round step failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].levelno == logging.WARNING
    assert "UNAVAILABLE" in failed[0].getMessage() and "\n" not in failed[0].getMessage()
    assert not any(r.exc_info for r in caplog.records), "no traceback for an outage"
    assert sum("round step works again" in r.getMessage() for r in caplog.records) == 1


class Crashed(BaseException):
    """Stands in for the process dying at a crash point (ucadi.ops.faults)."""


def crash_at(point: str):
    def crash_point(name: str) -> None:
        if name == point:
            raise Crashed(name)
    return crash_point


@pytest.mark.parametrize("total_rounds_after_restart", [2, 1])
def test_a_round_left_sealed_by_a_crash_is_followed_by_the_next_or_completes_on_restart(
        tmp_path, secret, monkeypatch, total_rounds_after_restart):
    clock = Clock()
    state = tmp_path / "agg"
    coord = coordinator(state, secret, clock)
    monkeypatch.setattr(faults, "crash_point", crash_at("after_seal_before_open"))
    with pytest.raises(Crashed):
        seal_first_round(coord, secret, tmp_path, np.ones(VALUES))
    monkeypatch.undo()
    coord.store.close()
    assert [(r.round, r.state) for r in AggregatorStore(state).rounds()] == [(1, SEALED)]
    restarted = coordinator(state, secret, clock, total_rounds=total_rounds_after_restart)
    # What the UcadiRoundStuck alert sees of it (deploy/prometheus/rules.yaml).
    labels = {"federation": "test-fed"}
    assert REGISTRY.get_sample_value("ucadi_round_state", {**labels, "state": "sealed"}) == 1
    assert REGISTRY.get_sample_value("ucadi_round_sealed_timestamp_seconds", labels) == clock.now
    restarted.recover()
    restarted.step()  # a second pass changes nothing: the path is idempotent
    view = restarted.view()
    assert view.latest_version == 1
    if total_rounds_after_restart == 1:  # the operator ended the federation at round 1
        assert (view.round, view.state) == (1, COMPLETED)
        return
    assert (view.round, view.state, view.base_version) == (2, COLLECTING, 1)
    assert view.expected == ["a", "b"]
    for site in ("a", "b"):
        upload(restarted, secret, tmp_path, site, np.ones(VALUES), 5, 2, 1)
    restarted.step()
    assert restarted.view().state == COMPLETED and restarted.view().latest_version == 2


def individual_uploads(state: Path) -> list[Path]:
    """Ciphertext files under `state` that hold one site's contribution."""
    from ucadi.lwe.serialization import read_header

    found = []
    for path in state.rglob("*"):
        if path.is_file() and path.read_bytes()[:4] == b"UCLW":
            header, _ = read_header(path.read_bytes())
            if header.contributors == 1:
                found.append(path)
    return found


def test_a_sealed_rounds_individual_uploads_are_deleted_and_their_records_kept(tmp_path, secret):
    coord = coordinator(tmp_path / "agg", secret, Clock())
    seal_first_round(coord, secret, tmp_path, np.ones(VALUES))
    assert coord.view().latest_version == 1
    assert individual_uploads(tmp_path / "agg") == []
    kept = coord.store.uploads(1)
    assert [u.site for u in kept] == ["a", "b"] and all(u.path is None for u in kept)
    assert coord.store.digest_seen(kept[0].sha256), "replays are still recognised"


def test_uploads_left_by_a_crash_between_seal_and_deletion_are_deleted_on_restart(
        tmp_path, secret, monkeypatch):
    clock = Clock()
    state = tmp_path / "agg"
    coord = coordinator(state, secret, clock)
    monkeypatch.setattr(faults, "crash_point", crash_at("after_seal_before_open"))
    with pytest.raises(Crashed):
        seal_first_round(coord, secret, tmp_path, np.ones(VALUES))
    monkeypatch.undo()
    coord.store.close()
    assert len(individual_uploads(state)) == 2, "the crash came before the deletion"
    restarted = coordinator(state, secret, clock)
    restarted.recover()
    assert individual_uploads(state) == []
    assert restarted.view().latest_version == 1
