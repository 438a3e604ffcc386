"""Server optimisers through the real services: every site ends with bit-identical global
weights and optimiser state (one joining late, one restarted), the plaintext simulation gives
the encrypted federation's model bit for bit, and the same seed reproduces the same model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from ucadi.demo.federation import FederationPlan, LocalFederation
from ucadi.experiments.arms import Cohort, evaluate_global
from ucadi.experiments.encrypted import federation_plan
from ucadi.experiments.simulate import FederationSetup, simulate
from ucadi.learn.server_opt import FederatedOptimization
from ucadi.learn.site_learner import load_global_model
from ucadi.v1 import federation_pb2

pytestmark = pytest.mark.slow
COMPLETED = federation_pb2.ROUND_STATE_COMPLETED
RECIPE = {"total_epochs": 4, "warmup_epochs": 1, "lr": 0.05, "batch_size": 4}


def states(federation: LocalFederation, sites: list[str]) -> dict[str, dict[str, np.ndarray]]:
    return {site: load_file(str(federation.global_state(site))) for site in sites}


def versions_published(federation: LocalFederation, sites: list[str], version: int):
    return lambda s: all(any(x.site == site and x.HasField("metrics")
                             and x.metrics.version >= version for x in s.sites)
                         for site in sites)


def test_late_joiner_and_restarted_site_hold_bit_identical_global_state(tmp_path,
                                                                       tiny_cohort) -> None:
    sites = ["main-campus", "optical-valley", "sino-french"]
    plan = FederationPlan(root=tmp_path, manifest=tiny_cohort, sites=sites, rounds=4,
                          min_sites=2, model_preset="cpu-small", recipe=RECIPE,
                          optimizer={"server": "fedadam", "server_lr": 0.01},
                          round_timeout_s=30.0, liveness_timeout_s=20.0)
    federation = LocalFederation(plan)
    federation.provision()
    federation.create_key()
    try:
        federation.start_crypto()
        federation.start_aggregator()
        for site in sites[:2]:
            federation.start_trainer(site)
        federation.approve_sites(sites[:2])
        federation.wait_for(versions_published(federation, sites[:2], 1), timeout=300)
        # A restart: the site resumes from the global state it saved.
        federation.processes["trainer-optical-valley"].stop()
        federation.start_trainer("optical-valley")
        federation.wait_for(lambda s: s.current.latest_version >= 2, timeout=300)
        # A late joiner: replays every published version from version 0.
        federation.start_trainer("sino-french")
        federation.approve_sites(["sino-french"])
        federation.wait_for(lambda s: s.current.state == COMPLETED
                            and versions_published(federation, sites, 4)(s), timeout=600)
        held = states(federation, sites)
    finally:
        federation.stop()
    reference = held[sites[0]]
    assert int(reference["version"][0]) == 4 and "server.v" in reference
    assert int(reference["server.steps"][0]) == 4
    for site in sites[1:]:
        assert sorted(held[site]) == sorted(reference), site
        for name, array in reference.items():
            assert held[site][name].tobytes() == array.tobytes(), (site, name)
    late_log = (tmp_path / "logs" / "trainer-sino-french.log").read_text()
    assert "fedadam" in late_log


def test_simulation_reproduces_the_encrypted_federation_and_a_seed_repeats(
        tmp_path, tiny_cohort) -> None:
    sites = ("main-campus", "nccid-uk")
    setup = FederationSetup(manifest=tiny_cohort, sites=sites, rounds=2, init_seed=3,
                            site_seed=3, recipe={**RECIPE, "total_epochs": 2},
                            optimization=FederatedOptimization(server="fedavgm", server_lr=1.0,
                                                               beta1=0.5))
    runs = []
    for attempt in ("first", "second"):
        federation = LocalFederation(federation_plan(setup, tmp_path / attempt))
        federation.run(timeout=600)
        runs.append(load_file(str(federation.global_state(sites[0])))["global"])
    simulated = simulate(setup).global_vector
    assert runs[0].tobytes() == runs[1].tobytes()
    assert simulated.tobytes() == runs[0].tobytes()
    cohort = Cohort.load(tiny_cohort, sites)
    numbers = [evaluate_global("federated", load_global_model(
        Path(tmp_path / attempt / "sites" / sites[0] / "work" / "global-state.safetensors"),
        setup.arch, setup.preset, 2, setup.init_seed), cohort, setup, seed=3)
        for attempt in ("first", "second")]
    assert json.dumps(numbers[0]) == json.dumps(numbers[1])  # NaN-safe: identical numbers
