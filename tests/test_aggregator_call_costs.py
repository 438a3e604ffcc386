"""Issue 25: the aggregator's work per call does not grow with the sites or the rounds run
(in-process, real ciphertexts, real SQLite; helpers from test_aggregator_rounds)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_aggregator_rounds import (
    COLLECTING,
    VALUES,
    Clock,
    coordinator,
    seal_first_round,
    upload,
)

from ucadi.lwe import generate_secret_key


@pytest.fixture(scope="module")
def secret():
    return generate_secret_key()


def test_status_of_one_round_does_not_grow_with_the_rounds_run(tmp_path, secret):
    """A site asks for one round's summary per global version (GetStatusRequest.round): the
    answer holds that round only, however many rounds (each listing every site) ran."""
    coord = coordinator(tmp_path / "agg", secret, Clock(), total_rounds=3)
    values = np.zeros(VALUES)
    seal_first_round(coord, secret, tmp_path, values)
    for site in ("a", "b"):
        upload(coord, secret, tmp_path, site, values, 5, round_number=2, base_version=1)
    coord.step()
    assert [r.round for r, _ in coord.round_summaries()] == [1, 2, 3]
    assert [(r.round, sorted(sites)) for r, sites in coord.round_summaries(2)] == [
        (2, ["a", "b"])]
    assert coord.round_summaries(7) == []


def test_a_waiting_poll_builds_its_answer_once_however_many_uploads_wake_it(
        tmp_path, secret, monkeypatch):
    """Each upload wakes every long poll; a poll compares the round and state only, and builds
    the view (the round's site lists, O(sites)) once, to answer (1,000 sites made it
    O(sites^2) per poll)."""
    coord = coordinator(tmp_path / "agg", secret, Clock(), min_sites=3)
    for site in ("a", "b", "c"):
        coord.join(site, 5)
    coord.step()
    view = coord.view()
    assert view.state == COLLECTING
    built = []
    real_view = coord.core.view
    monkeypatch.setattr(coord.core, "view", lambda: (built.append(1), real_view())[1])
    answered: dict[str, object] = {}
    poll = threading.Thread(target=lambda: answered.setdefault(
        "view", coord.wait_for_change(view.round, view.state, 30.0)))
    poll.start()
    values = np.zeros(VALUES)
    for site in ("a", "b"):
        upload(coord, secret, tmp_path, site, values, 5)
    for _ in range(30):
        with coord.core.changed:
            coord.core.notify()
    time.sleep(0.2)
    assert poll.is_alive() and built == []
    upload(coord, secret, tmp_path, "c", values, 5)
    coord.step()  # all three uploaded: the round seals
    poll.join(10)
    assert not poll.is_alive() and answered["view"].state != COLLECTING
    assert built == [1]


def test_an_upload_reads_its_own_site_and_upload_rows_not_every_sites(tmp_path, secret):
    """Checking and recording an upload reads the uploading site's row and its own upload's,
    not every site's or every upload of the round (O(sites) per upload before issue 25)."""
    coord = coordinator(tmp_path / "agg", secret, Clock(), min_sites=2)
    for k in range(30):
        coord.join(f"s{k:02d}", 5)
    coord.step()
    upload(coord, secret, tmp_path, "s00", np.zeros(VALUES), 5)
    statements: list[str] = []
    coord.store._db.set_trace_callback(statements.append)
    upload(coord, secret, tmp_path, "s01", np.zeros(VALUES), 5)
    coord.store._db.set_trace_callback(None)
    assert statements, "the trace saw no statements"
    every = [s for s in statements if "FROM sites ORDER BY" in s
             or "FROM uploads WHERE round=1 ORDER BY" in s]
    assert every == [], every
    assert coord.upload_count(1) == 2
