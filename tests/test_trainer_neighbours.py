"""A site's pairwise-mask steps with a sparse neighbour graph (services/trainer/masking.py),
against an in-memory relay: the site keeps the k the aggregator announced in its durable state,
shares with and masks for its neighbours only, answers for its neighbourhood only, and the
relayed answers remove every mask left in the sum of the survivors' masks."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
from test_trainer_masking import SECRET, _masks

from ucadi.lwe.masking import (
    MaskingRound,
    PublicRoundKeys,
    UnmaskingAnswer,
    recover_round_secrets,
    unmasker,
    unmasking_terms,
)
from ucadi.lwe.neighbours import round_graph
from ucadi.lwe.shamir import share_from_bytes

SITES = ["a", "b", "c", "d", "e", "f"]
K, T = 2, 2


class SparseRelay:
    """The aggregator's relaying of a sparse round (k = 2, t = 2), in memory."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[bytes, bytes, bytes]] = {}
        self.sealed: dict[str, dict[str, bytes]] = {}
        self.answers: dict[str, tuple[dict, dict]] = {}

    def client(self, site: str) -> SimpleNamespace:
        def exchange_mask_keys(round_number, keys, wait_s):
            self.keys.setdefault(site, (keys.share_public, keys.mask_public, keys.identity))
            return SimpleNamespace(complete=len(self.keys) == len(SITES), threshold=T,
                                   neighbours=K, keys=[
                SimpleNamespace(site=s, share_public=v[0], mask_public=v[1], identity=v[2])
                for s, v in sorted(self.keys.items())])

        def exchange_mask_shares(round_number, sealed, wait_s):
            self.sealed.setdefault(site, sealed)
            complete = len(self.sealed) == len(SITES)
            return SimpleNamespace(complete=complete, participants=sorted(self.sealed), shares=[
                SimpleNamespace(site=sender, sealed=pairs[site])
                for sender, pairs in sorted(self.sealed.items()) if site in pairs]
                if complete else [])

        def send_unmasking(round_number, self_seeds, mask_keys):
            self.answers.setdefault(site, (self_seeds, mask_keys))
        return SimpleNamespace(exchange_mask_keys=exchange_mask_keys,
                               exchange_mask_shares=exchange_mask_shares,
                               send_unmasking=send_unmasking)


def test_a_sparse_site_masks_shares_and_answers_within_its_neighbourhood(tmp_path):
    relay = SparseRelay()
    joined: dict = {}
    for _ in range(3):  # each pass gets as far as the others let it (keys, then shares)
        for site in SITES:
            if joined.get(site) is None:
                joined[site] = _masks(tmp_path, site).join_round(relay.client(site), 4,
                                                                 lambda: False)
    assert all(m is not None for m in joined.values())
    state = json.loads((tmp_path / "a" / "masking" / "round-00004.json").read_text())
    assert state["neighbours"] == K and state["threshold"] == T
    context = MaskingRound("fed", SECRET.key_id, 4, tuple(SITES), T, K)
    advertised = {s: PublicRoundKeys(*k) for s, k in relay.keys.items()}
    graph = round_graph(context)
    for site in SITES:
        assert set(relay.sealed[site]) == graph.holders(site)
        assert len(joined[site].pairing.mask_terms(SITES)) == 1 + K

    dropped = graph.order[0]
    survivors = [s for s in SITES if s != dropped]
    slots = 3_000
    totals = {site: joined[site].total(slots, SECRET.params) for site in survivors}
    for site in survivors:
        assert _masks(tmp_path, site).answer(relay.client(site), 4, survivors, [dropped])
        seeds, keys = relay.answers[site]
        assert set(seeds) == graph.holders(site) - {dropped}
        assert set(keys) == graph.neighbours(site) & {dropped}
    answers = {site: UnmaskingAnswer({o: share_from_bytes(v) for o, v in seeds.items()},
                                     {o: share_from_bytes(v) for o, v in keys.items()})
               for site, (seeds, keys) in relay.answers.items()}
    recovered = recover_round_secrets(context, answers, survivors, [dropped], advertised)
    summed = np.zeros(slots, dtype=np.uint64)
    for total in totals.values():
        summed += total
    assert summed.any()
    unmasker(unmasking_terms(context, recovered, advertised, survivors), SECRET.params)(summed, 0)
    assert not (summed & np.uint64(SECRET.params.modulus_mask)).any(), \
        "every mask is removed, nothing else is changed"
