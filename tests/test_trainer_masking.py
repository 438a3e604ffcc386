"""A site's pairwise-mask steps and their durable state (services/trainer/masking.py), against
an in-memory relay standing in for the aggregator: a restarted site advertises the same keys
and keeps the shares it received; it never answers one round for two different sets; a phase
that closed without it makes it sit the round out instead of failing."""

from __future__ import annotations

import stat
from types import SimpleNamespace

import grpc
import numpy as np
from masking_identities import Identities

from services.trainer.client import FederationRejected
from services.trainer.masking import SiteCredentials, SiteMasks
from ucadi.lwe import generate_secret_key
from ucadi.lwe.masking import (
    MaskingRound,
    PublicRoundKeys,
    UnmaskingAnswer,
    recover_round_secrets,
    unmasker,
    unmasking_terms,
)
from ucadi.lwe.shamir import share_from_bytes

SECRET = generate_secret_key()
SITES = ["east", "north", "south"]
IDENTITIES = Identities()


class Relay:
    """The aggregator's relaying, in memory: every site advertises and shares at once."""

    def __init__(self, substitute: dict[str, PublicRoundKeys] | None = None) -> None:
        self.keys: dict[str, tuple[bytes, bytes, bytes]] = {}
        # A dishonest relay: what it shows in place of a site's keys (to every other site).
        self.substitute = substitute or {}
        self.sealed: dict[str, dict[str, bytes]] = {}
        self.answers: dict[str, tuple[dict, dict]] = {}

    def client(self, site: str) -> SimpleNamespace:
        def exchange_mask_keys(round_number, keys, wait_s):
            self.keys.setdefault(site, (keys.share_public, keys.mask_public, keys.identity))

            def shown(owner, k):
                forged = self.substitute.get(owner) if owner != site else None
                return (forged.share_public, forged.mask_public, forged.identity) if forged \
                    else k
            return SimpleNamespace(complete=len(self.keys) == len(SITES), threshold=2, keys=[
                SimpleNamespace(site=s, share_public=v[0], mask_public=v[1], identity=v[2])
                for s, v in ((s, shown(s, k)) for s, k in sorted(self.keys.items()))])

        def exchange_mask_shares(round_number, sealed, wait_s):
            self.sealed.setdefault(site, sealed)
            complete = len(self.sealed) == len(SITES)
            return SimpleNamespace(complete=complete, participants=sorted(self.sealed), shares=[
                SimpleNamespace(site=sender, sealed=pairs[site])
                for sender, pairs in sorted(self.sealed.items())] if complete else [])

        def send_unmasking(round_number, self_seeds, mask_keys):
            self.answers.setdefault(site, (self_seeds, mask_keys))
        return SimpleNamespace(exchange_mask_keys=exchange_mask_keys,
                               exchange_mask_shares=exchange_mask_shares,
                               send_unmasking=send_unmasking)


def _masks(tmp_path, site: str) -> SiteMasks:
    return SiteMasks(tmp_path / site / "masking", site, "fed", SECRET.key_id, SiteCredentials(
        IDENTITIES.key(site), IDENTITIES.identity(site), IDENTITIES.custodian.public_key))


def _join_all(tmp_path, relay: Relay) -> dict:
    joined = {}
    for _ in range(3):  # each pass gets as far as the others let it (keys, then shares)
        for site in SITES:
            if site not in joined or joined[site] is None:
                joined[site] = _masks(tmp_path, site).join_round(relay.client(site), 4,
                                                                 lambda: False)
    return joined


def test_a_restarted_site_reuses_its_round_keys_and_its_state_file_is_private(tmp_path):
    relay = Relay()
    first = _masks(tmp_path, "east").join_round(relay.client("east"), 4, lambda: False)
    assert first is None  # the others have not advertised yet; the round went on
    advertised = relay.keys["east"]
    # a new process on the same folder: the same keys, so what it shared stays valid
    _masks(tmp_path, "east").join_round(relay.client("east"), 4, lambda: False)
    assert relay.keys["east"] == advertised
    state = tmp_path / "east" / "masking" / "round-00004.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600


def test_masked_sum_unmasks_with_the_relayed_answers_and_answers_are_never_changed(tmp_path):
    relay = Relay()
    joined = _join_all(tmp_path, relay)
    assert all(m is not None for m in joined.values())
    params = SECRET.params
    slots = 5_000
    totals = {site: joined[site].total(slots, params) for site in SITES}
    for site in SITES:  # answer as survivors, once; a restarted site answers the same
        masks = _masks(tmp_path, site)
        assert masks.answer(relay.client(site), 4, SITES, [])
        assert masks.answer(relay.client(site), 4, SITES, [])
        assert not masks.answer(relay.client(site), 4, SITES[:2], [SITES[2]]), \
            "a second answer with other sets would reveal both secrets of a site"
    context = MaskingRound("fed", SECRET.key_id, 4, tuple(SITES), 2)
    answers = {site: UnmaskingAnswer({o: share_from_bytes(v) for o, v in seeds.items()},
                                     {o: share_from_bytes(v) for o, v in keys.items()})
               for site, (seeds, keys) in relay.answers.items()}
    advertised = {s: PublicRoundKeys(*k) for s, k in relay.keys.items()}
    recovered = recover_round_secrets(context, answers, SITES, [], advertised)
    summed = np.zeros(slots, dtype=np.uint64)
    for total in totals.values():
        summed += total
    unmasker(unmasking_terms(context, recovered, advertised, SITES), params)(summed, 0)
    assert not summed.any(), "every mask is removed, nothing else is changed"


def test_a_phase_that_closed_without_the_site_makes_it_sit_out(tmp_path):
    def refused(*args):
        raise FederationRejected(grpc.StatusCode.FAILED_PRECONDITION,
                                 "round 4's key set was fixed without east")
    client = SimpleNamespace(exchange_mask_keys=refused)
    assert _masks(tmp_path, "east").join_round(client, 4, lambda: True) is None


def test_a_site_shown_substituted_round_keys_sits_the_round_out_before_masking(tmp_path, caplog):
    """The relaying aggregator shows east and north its own round keys in place of south's,
    (a) with south's real certified identity, (b) with an identity the custodian never
    certified. Either way no site masks with keys the central side knows: a forged identity is
    refused when the key set arrives, and substituted keys under south's identity make the
    share pairs fail to open between sites shown different key sets, before anything is
    masked or uploaded."""
    from ucadi.lwe.custodian import certify_site, generate_custodian_key
    from ucadi.lwe.masking import generate_round_keys

    attacker = generate_round_keys()
    real = attacker.public(IDENTITIES.identity("south"))
    uncertified = attacker.public(certify_site(generate_custodian_key(), "south",
                                               bytes(32)))
    for case, forged in (("real identity", real), ("forged identity", uncertified)):
        relay = Relay(substitute={"south": forged})
        with caplog.at_level("ERROR"):
            joined = _join_all(tmp_path / case, relay)
        assert joined["east"] is None and joined["north"] is None, case
        assert "sitting round 4 out" in caplog.text, case
        caplog.clear()
