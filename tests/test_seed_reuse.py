"""A site never encrypts twice under its round seed, even when its local seed ledger is lost
(restored from a backup, deleted, a second replica): before using the round seed it asks the
central side whether it already holds something the site sent for that round. Real crypto
service and aggregator processes; the site is the real FederationClient and SiteCipher."""

from __future__ import annotations

import pytest
from federation_probe import ProbeSite

from services.trainer.cipher import RoundContext, SiteCipher
from services.trainer.client import FederationClient
from ucadi.demo.federation import FederationPlan, LocalFederation
from ucadi.lwe.prepared import round_seed
from ucadi.lwe.stream import open_verified

pytestmark = pytest.mark.slow
SITE, OTHER = "main-campus", "optical-valley"


def test_a_site_whose_seed_ledger_was_lost_does_not_reuse_its_round_seed(tmp_path,
                                                                         tiny_cohort) -> None:
    # The shared-key mode: the probe uploads without the masking phases.
    plan = FederationPlan(root=tmp_path, manifest=tiny_cohort, sites=[SITE, OTHER], rounds=2,
                          min_sites=2, pairwise_masks=False)
    federation = LocalFederation(plan)
    federation.provision()
    secret = federation.create_key()
    federation.start_crypto()
    federation.start_aggregator()
    try:
        site = ProbeSite(federation, SITE)  # registered, approved, joined
        other = ProbeSite(federation, OTHER)  # joined, never uploads: round 1 stays open
        client = FederationClient(federation.processes["aggregator"].target,
                                  federation.tls(SITE), retry_budget_s=30,
                                  sum_target=federation.processes["crypto"].target)
        joined = client.join(site.train_cases, "test")
        federation.wait_for(lambda s: s.current.round == 1, timeout=60, poll_s=0.2)
        seed = round_seed(secret.key_id, joined.federation_id, 1, SITE)

        def encrypt(cipher: SiteCipher, name: str):
            context = RoundContext(joined.federation_id, 1, SITE, (SITE, OTHER),
                                   round_seed_unused=not client.central_holds_bytes(1))
            cipher.prepare(site.vector.size, context)
            path = tmp_path / name
            cipher.encrypt_to_file(site.vector, weight=8, round_number=1,
                                   layout_hash=joined.model.layout_hash, path=path, site=SITE)
            return path, context

        assert not client.central_holds_bytes(1)
        first, context = encrypt(SiteCipher(secret, tmp_path / "ledger"), "first.lwe")
        assert context.round_seed_unused and open_verified(first).seeds == (seed,)
        client.upload_update(site.header(), first)
        assert client.central_holds_bytes(1), "the sum service holds it and it is recorded"
        # The ledger is lost (a restore from an older backup): only the central side knows.
        (tmp_path / "ledger" / "round-seeds-used.json").unlink()
        again, context = encrypt(SiteCipher(secret, tmp_path / "ledger"), "again.lwe")
        assert not context.round_seed_unused
        assert open_verified(again).seeds != (seed,), "a fresh random seed, not the round's"
        client.close()
        site.close()
        other.close()
    finally:
        federation.stop()
