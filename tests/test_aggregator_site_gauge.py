"""ucadi_site_last_round exists for every active site from its join on and after a restart
(restored from SQLite), so UcadiSiteMissingRounds can fire for a site that never uploads."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import REGISTRY
from test_aggregator_rounds import VALUES, Clock, coordinator, upload

from services.aggregator import metrics
from ucadi.lwe import generate_secret_key


@pytest.fixture(scope="module")
def secret():
    return generate_secret_key()


def last_round(site: str) -> float | None:
    """The gauge's value for `site` of the test federation, None when it has no series."""
    return REGISTRY.get_sample_value("ucadi_site_last_round",
                                     {"federation": "test-fed", "site": site})


def test_site_last_round_is_set_on_join_and_restored_from_the_store_at_start(tmp_path, secret):
    clock = Clock()
    state = tmp_path / "agg"
    metrics.SITE_LAST_ROUND.clear()
    coord = coordinator(state, secret, clock, total_rounds=5)
    for site in ("a", "b", "idle"):
        coord.join(site, 5)
    assert last_round("idle") == 0, "a site that joined before round 1 has its series at once"
    coord.step()
    for site in ("a", "b"):
        upload(coord, secret, tmp_path, site, np.zeros(VALUES), 5)
    clock.now += 101  # idle never uploads: the deadline seals round 1 with a and b
    coord.step()
    coord.step()
    assert coord.view().round == 2
    coord.join("late", 5)
    assert last_round("late") == 1, "joined during round 2: counted from round 1 on"
    assert (last_round("a"), last_round("idle")) == (1, 0)
    coord.leave("b")
    assert last_round("b") is None, "a site that left is not missing rounds"

    coord.store.close()
    metrics.SITE_LAST_ROUND.clear()
    coordinator(state, secret, clock, total_rounds=5)
    assert {site: last_round(site) for site in ("a", "b", "idle", "late")} == {
        "a": 1, "b": None, "idle": 0, "late": 1}
