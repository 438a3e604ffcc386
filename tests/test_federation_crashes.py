"""Crash windows (issue 18): a service process dies between two durable steps, exactly there
(UCADI_CRASH_AT, ucadi/ops/faults.py), and is started again on the same state folder and port;
the federation must finish its rounds with every update counted once and no site exiting."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from federation_probe import ProbeSite

from services.aggregator.store import AggregatorStore
from ucadi.ct.synth import read_manifest
from ucadi.demo.federation import FederationPlan, LocalFederation
from ucadi.demo.processes import ServiceProcess
from ucadi.model import read_card
from ucadi.ops.faults import CRASH_ENV, CRASH_EXIT_CODE
from ucadi.v1 import federation_pb2

pytestmark = pytest.mark.slow
SITES = ["main-campus", "optical-valley"]
COMPLETED = federation_pb2.ROUND_STATE_COMPLETED


def make_federation(root: Path, manifest: Path, **overrides) -> LocalFederation:
    """PKI, key and crypto service of a two-site federation (the aggregator not started)."""
    settings = dict(root=root, manifest=manifest, sites=SITES, rounds=1, min_sites=2,
                    model_preset="cpu-small", recipe={"total_epochs": 1, "warmup_epochs": 0},
                    round_timeout_s=600.0)
    settings.update(overrides)
    federation = LocalFederation(FederationPlan(**settings))
    federation.provision()
    federation.create_key()
    federation.start_crypto()
    return federation


def start_crashing(start, point: str, monkeypatch: pytest.MonkeyPatch) -> ServiceProcess:
    """Start a process that dies at `point` (its restart, started later, does not)."""
    monkeypatch.setenv(CRASH_ENV, point)
    try:
        return start()
    finally:
        monkeypatch.delenv(CRASH_ENV)


def wait_crashed(process: ServiceProcess, point: str, timeout: float = 300.0) -> None:
    """Wait for `process` to die at `point`."""
    process.process.wait(timeout)
    assert process.process.returncode == CRASH_EXIT_CODE, process.tail()
    assert f"crash point {point} reached" in process.log_path.read_text()


def restart_aggregator(federation: LocalFederation) -> ServiceProcess:
    """The aggregator again, on its port and state folder."""
    return federation.start_aggregator_on(federation.processes.pop("aggregator").port)


def summed_weight(federation: LocalFederation, version: int) -> int:
    """The total weight a global version decrypts to as a site decrypts it (each update
    counted once); the aggregator must be running (a masked round's terms come from it)."""
    return federation.decrypt_global(version)[1]


def send_tolerating_a_dying_aggregator(probe: ProbeSite, header, payload: bytes) -> None:
    """Upload; the aggregator may die (at its crash point) before its reply leaves."""
    try:
        probe.send(header, payload)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc


def test_aggregator_killed_after_a_seal_and_before_the_next_round_opens_it_on_restart(
        tmp_path, tiny_cohort, monkeypatch):
    # The shared-key mode: the probes upload without the masking phases.
    federation = make_federation(tmp_path, tiny_cohort, rounds=2, pairwise_masks=False)
    probes: list[ProbeSite] = []
    try:
        aggregator = start_crashing(federation.start_aggregator, "after_seal_before_open",
                                    monkeypatch)
        probes = [ProbeSite(federation, site) for site in SITES]
        federation.wait_for(lambda s: s.current.round == 1, timeout=120, poll_s=0.2)
        for probe in probes:
            send_tolerating_a_dying_aggregator(
                probe, probe.header(), probe.encrypted_update(1, tmp_path / "update.lwe"))
        wait_crashed(aggregator, "after_seal_before_open")
        store = AggregatorStore(tmp_path / "aggregator")
        assert [(r.round, r.state) for r in store.rounds()] == [(1, "sealed")], \
            "the crash came between the seal and the next round"
        store.close()
        restart_aggregator(federation)
        current = federation.status().current  # recovered before it answered
        assert (current.round, current.state, current.base_version) == (
            2, federation_pb2.ROUND_STATE_COLLECTING, 1)
        for probe in probes:
            probe.send(probe.header(round=2, base_version=1),
                       probe.encrypted_update(2, tmp_path / "update.lwe"))
        status = federation.wait_for(lambda s: s.current.state == COMPLETED, timeout=120,
                                     poll_s=0.2)
    finally:
        for probe in probes:
            probe.close()
        federation.stop()
    assert [sorted(r.uploaded_sites) for r in status.rounds] == [SITES, SITES]
    assert summed_weight(federation, 2) == sum(p.train_cases for p in probes)


def published_version(federation: LocalFederation, site: str) -> int:
    """The global version a site's model folder serves (0 before the first)."""
    current = federation.root / "sites" / site / "models" / "current"
    return read_card(current).version if current.exists() else 0


def test_trainer_killed_after_the_sum_service_took_its_update_records_that_one_on_restart(
        tmp_path, tiny_cohort, monkeypatch):
    # min_sites equals the number of sites: the round cannot complete without the restarted one.
    federation = make_federation(tmp_path, tiny_cohort)
    crashing = f"trainer-{SITES[0]}"
    try:
        federation.start_aggregator()
        trainer = start_crashing(lambda: federation.start_trainer(SITES[0]),
                                 "after_sum_took_before_record", monkeypatch)
        federation.start_trainer(SITES[1])
        federation.approve_sites(SITES)
        wait_crashed(trainer, "after_sum_took_before_record")
        federation.processes.pop(crashing)
        restarted = federation.start_trainer(SITES[0])
        status = federation.wait_for(lambda s: s.current.state == COMPLETED and all(
            published_version(federation, site) == 1 for site in SITES), timeout=300)
        assert restarted.alive(), restarted.tail()
        weight = summed_weight(federation, 1)
    finally:
        federation.stop()
    assert sorted(status.rounds[0].uploaded_sites) == SITES
    log = restarted.log_path.read_text()
    assert "recording that one, not the update just made" in log
    assert "site agent stopped" not in log
    train_cases = sum(1 for r in read_manifest(tiny_cohort) if r.site in SITES
                      and r.split == "train")
    assert weight == train_cases, "each site's update counted once"
    # Published models are bit-identical across sites, the restarted one included (issue 18:
    # metadata order and BatchNorm's batch counters used to differ).
    published = {site: federation.root / "sites" / site / "models" / "versions" / "00001"
                 for site in SITES}
    assert len({(folder / "model.safetensors").read_bytes() for folder in published.values()}) == 1
    assert len({read_card(folder).weights_sha256 for folder in published.values()}) == 1


def test_trainer_goes_on_when_the_aggregator_dies_after_recording_its_update_and_seals_it(
        tmp_path, tiny_cohort, monkeypatch):
    # One site and min_sites 1: the restarted aggregator seals round 1 with the recorded update
    # before it answers, so the site's retried record meets a sealed round.
    site = SITES[0]
    federation = make_federation(tmp_path, tiny_cohort, sites=[site], min_sites=1, rounds=2,
                                 pairwise_masks=False)  # one site: nothing to pair with
    try:
        aggregator = start_crashing(federation.start_aggregator, "after_record_before_reply",
                                    monkeypatch)
        trainer = federation.start_trainer(site)
        federation.approve_sites([site])
        wait_crashed(aggregator, "after_record_before_reply")
        restart_aggregator(federation)
        status = federation.wait_for(lambda s: s.current.state == COMPLETED and
                                     published_version(federation, site) == 2, timeout=300)
        assert trainer.alive(), trainer.tail()
    finally:
        federation.stop()
    assert [list(r.uploaded_sites) for r in status.rounds] == [[site], [site]]
    log = trainer.log_path.read_text()
    assert "round 1 is not open for uploads" in log, "the retried record met the sealed round"
    assert "round 1: the aggregator had recorded this update before its reply was lost" in log
    assert "site agent stopped" not in log
