"""Pairwise masks with real trainers (issue 21): two sites train a masked round (t = 2); one
trainer is killed between saving its round's key set and sending its shares and restarts on its
state: the round counts every site once and every site publishes the same model bytes.
(The aggregator killed mid-unmasking: tests/test_masking_e2e.py.)"""

from __future__ import annotations

import pytest
from test_federation_crashes import (
    published_version,
    start_crashing,
    wait_crashed,
)

from ucadi.demo.federation import FederationPlan, LocalFederation
from ucadi.model import read_card
from ucadi.v1 import federation_pb2

pytestmark = pytest.mark.slow
SITES = ["main-campus", "optical-valley"]
COMPLETED = federation_pb2.ROUND_STATE_COMPLETED


def test_a_masked_round_survives_a_trainer_killed_between_its_keys_and_shares(
        tmp_path, tiny_cohort, monkeypatch):
    monkeypatch.setenv("UCADI_FEDERATION__PAIRWISE_MASKS", "true")
    monkeypatch.setenv("UCADI_FEDERATION__MASK_PHASE_TIMEOUT_S", "60")
    federation = LocalFederation(FederationPlan(
        root=tmp_path / "fed", manifest=tiny_cohort, sites=SITES, rounds=1, min_sites=2,
        model_preset="cpu-small", recipe={"total_epochs": 1, "warmup_epochs": 0},
        round_timeout_s=300.0))
    federation.provision()
    federation.create_key()
    federation.start_crypto()
    try:
        federation.start_aggregator()
        trainer = start_crashing(lambda: federation.start_trainer(SITES[0]),
                                 "after_mask_keys_before_shares", monkeypatch)
        for site in SITES[1:]:
            federation.start_trainer(site)
        federation.approve_sites(SITES)
        wait_crashed(trainer, "after_mask_keys_before_shares", timeout=180)
        federation.processes.pop(f"trainer-{SITES[0]}")
        restarted = federation.start_trainer(SITES[0])
        status = federation.wait_for(lambda s: s.current.state == COMPLETED and all(
            published_version(federation, site) == 1 for site in SITES), timeout=240)
        assert restarted.alive(), restarted.tail()
    finally:
        federation.stop()
    assert sorted(status.rounds[0].uploaded_sites) == sorted(SITES)
    published = {site: federation.root / "sites" / site / "models" / "versions" / "00001"
                 for site in SITES}
    assert len({(folder / "model.safetensors").read_bytes() for folder in published.values()}) == 1
    assert len({read_card(folder).weights_sha256 for folder in published.values()}) == 1
    assert not list((federation.root / "sites").rglob("masking/round-*.json")), \
        "a round's masking state is deleted once its sum is decrypted"
