"""A sparse neighbour graph through the aggregator (services/aggregator/masking.py, rounds.py),
in-process with real SQLite, real ciphertexts and a settable clock: federation.mask_neighbours
fixes k and t with the key set and stores them for the sites' MaskKeys; shares go to a site's
holders only; uploads close only while every neighbourhood keeps t survivors (a short one is
logged by name); a round with a site dropped before and one after uploading seals to the
survivors' FedAvg; the setting reaches the aggregator from the chart, and bad values are
refused with what is accepted."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from masking_identities import Identities
from test_aggregator_masking import _upload, assert_sealed_fedavg
from test_aggregator_rounds import VALUES, Clock, coordinator

from services.aggregator.contracts import COLLECTING, SEALED, UNMASKING
from services.aggregator.masking import MaskPhaseError
from ucadi.errors import UcadiError
from ucadi.lwe import generate_secret_key
from ucadi.lwe.masking import MaskingRound, answer_unmasking, generate_round_keys
from ucadi.lwe.shamir import share_to_bytes

PHASE_S = 30.0
SITES = ("a", "b", "c", "d", "e", "f")
IDENTITIES = Identities()


@pytest.fixture(scope="module")
def secret():
    return generate_secret_key()


def _sparse_round(tmp_path, secret, clock, silent_on_ring=()):
    """Six sites, mask_neighbours 2: a ring, each site's shares held by 3, t = 2; the sites at
    the ring positions `silent_on_ring` give no shares."""
    coord = coordinator(tmp_path / "agg", secret, clock, pairwise_masks=True,
                        mask_phase_timeout_s=PHASE_S, mask_neighbours=2, min_sites=2)
    for site in SITES:
        coord.join(site, 5)
    coord.step()
    keys = {site: generate_round_keys() for site in SITES}
    for site in SITES:
        public = IDENTITIES.advertise(site, keys[site])
        coord.masks.advertise(site, 1, public.share_public, public.mask_public, public.identity)
    coord.step()
    record, advertised = coord.masks.keys(1)
    assert record.key_set == list(SITES) and (record.neighbours, record.threshold) == (2, 2)
    context = MaskingRound("test-fed", secret.key_id, 1, SITES, 2, 2)
    pairings = {s: IDENTITIES.pairing(context, s, keys[s], advertised) for s in SITES}
    graph = pairings["a"].graph
    assert graph == coord.masks.graph(record)  # the aggregator draws the sites' graph
    with pytest.raises(MaskPhaseError, match="a's holders, its neighbours in the round's graph"):
        coord.masks.give_shares("a", 1, {s: b"x" for s in SITES})  # the complete graph's
    silent = {graph.order[i] for i in silent_on_ring}
    for site, pairing in pairings.items():
        messages = pairing.share_messages()
        assert set(messages) == graph.holders(site) and len(messages) == 3
        if site not in silent:
            coord.masks.give_shares(site, 1, messages)
    if not silent:
        assert coord.view().expected == list(SITES)
    return coord, context, pairings, graph


def test_a_sparse_round_with_dropouts_before_and_after_uploading_seals_to_the_fedavg(
        tmp_path, secret):
    clock = Clock()
    coord, context, pairings, graph = _sparse_round(tmp_path, secret, clock)
    ring = graph.order
    gone, silent = ring[0], ring[3]  # apart on the ring: every neighbourhood keeps t = 2
    rng = np.random.default_rng(3)
    models = {s: rng.normal(0, 0.5, VALUES) for s in SITES}
    survivors = sorted(set(SITES) - {gone})
    for site in survivors:
        assert len(pairings[site].mask_terms(SITES)) == 3  # its self-mask, its 2 neighbours'
        _upload(coord, secret, tmp_path, site, models[site], pairings[site], SITES)
    coord.step()
    assert coord.view().state == COLLECTING  # waits for `gone` until the deadline
    clock.now = coord.view().deadline
    coord.step()
    view = coord.view()
    assert view.state == UNMASKING and view.survivors == survivors and view.dropped == [gone]
    for site in survivors:
        received = pairings[site].open_all(coord.masks.shares_for(site, 1)[1])
        answer = answer_unmasking(context, site, received, survivors, [gone],
                                  graph=pairings[site].graph)
        assert set(answer.self_seeds) == graph.holders(site) - {gone}
        seeds = {o: share_to_bytes(v) for o, v in answer.self_seeds.items()}
        keys = {o: share_to_bytes(v) for o, v in answer.mask_keys.items()}
        with pytest.raises(MaskPhaseError, match="exactly the survivors"):
            coord.masks.answer(site, 1, {s: next(iter(seeds.values())) for s in survivors},
                               keys)
        if site != silent:  # `silent` drops after its upload: it never answers
            coord.masks.answer(site, 1, seeds, keys)
    coord.step()
    assert coord.view().state == UNMASKING  # waits for silent's answer until the deadline
    clock.now += PHASE_S
    coord.step()
    assert coord.store.rounds()[0].state == SEALED

    terms = coord.masks.terms(1)
    assert len(terms) == len(survivors) + 2  # self-masks and gone's two neighbours' masks
    assert_sealed_fedavg(coord, secret, models, survivors)


def test_uploads_stay_open_while_a_neighbourhood_would_lack_t_survivors(tmp_path, secret,
                                                                       caplog):
    clock = Clock()
    coord, _, pairings, graph = _sparse_round(tmp_path, secret, clock)
    ring = graph.order
    stranded = ring[1]  # both its neighbours drop: its self-mask seed has 1 holder of t = 2
    rng = np.random.default_rng(4)
    for site in set(SITES) - {ring[0], ring[2]}:
        _upload(coord, secret, tmp_path, site, rng.normal(0, 0.5, VALUES), pairings[site],
                SITES)
    clock.now = coord.view().deadline
    with caplog.at_level(logging.WARNING):
        coord.step()
    assert coord.view().state == COLLECTING
    assert f"unmasking would lack the shares of {stranded} (1 of t = 2)" in caplog.text


def test_a_site_whose_neighbours_gave_no_shares_sits_the_round_out(tmp_path, secret, caplog):
    clock = Clock()
    coord, _, _, graph = _sparse_round(tmp_path, secret, clock, silent_on_ring=(0, 2))
    ring = graph.order
    coord.step()
    assert coord.masks.shares_for(ring[3], 1)[0] is None  # waits for the two until the deadline
    clock.now += PHASE_S
    with caplog.at_level(logging.WARNING):
        coord.step()
    # ring[1]'s shares would be held by itself alone among the sharers: 1 of t = 2.
    assert f"{ring[1]} sit the round out" in caplog.text and "(1 of t = 2)" in caplog.text
    assert coord.view().expected == sorted(ring[3:])


def test_mask_neighbours_reaches_the_aggregator_from_the_chart_and_bad_values_are_refused(
        tmp_path: Path):
    from test_deploy_charts import CENTRAL, render, with_central

    from services.aggregator.config import DEFAULTS, build_federation_config
    from ucadi.ops.config import load_config

    for value, kept in (("auto", -1), (4, 4), (0, 0)):
        values = with_central({"federation": {"masking": {"enabled": True,
                                                          "neighbours": value}}})
        manifests, _ = render(CENTRAL, values)
        config_map = next(m for m in manifests if m["kind"] == "ConfigMap")
        path = tmp_path / "aggregator.yaml"
        path.write_text(config_map["data"]["aggregator.yaml"])
        federation = build_federation_config(load_config(DEFAULTS, path, environ={}))
        assert federation.mask_neighbours == kept
    config = load_config(DEFAULTS, path, environ={})
    for bad in (3, 1, -2, "many", True, 2.5):
        config["federation"]["mask_neighbours"] = bad
        with pytest.raises(UcadiError, match=f"mask_neighbours is {bad!r}; it must be 0 "
                                             ".*an even whole number k >= 2.*\"auto\""):
            build_federation_config(config)
