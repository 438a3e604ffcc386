"""A federation that changes its server optimiser under a running site: the site must not train
on under the configuration it joined with (issue 17: "no site can silently differ"). Real
aggregator, crypto service and trainer processes; the aggregator restarts with a new
`federation.optimizer` on the same port and state."""

from __future__ import annotations

import time

import pytest
from federation_probe import central_side

from ucadi.learn.server_opt import FederatedOptimization

pytestmark = pytest.mark.slow
SITE = "main-campus"


def test_a_site_stops_with_both_digests_when_the_announced_optimizer_changes(
        tmp_path, tiny_cohort) -> None:
    federation = central_side(tmp_path / "fed", tiny_cohort, [SITE, "optical-valley"])
    plan = federation.plan
    try:
        trainer = federation.start_trainer(SITE)
        federation.approve_sites([SITE])
        federation.wait_for(lambda s: any(site.site == SITE for site in s.sites), timeout=120)
        joined_under = FederatedOptimization.from_dict({}).digest
        port = federation.processes["aggregator"].port
        federation.processes["aggregator"].stop()
        plan.optimizer = {"server": "fedavgm", "beta1": 0.5}
        announced = FederatedOptimization.from_dict(plan.optimizer).digest
        federation.start_aggregator_on(port)
        deadline = time.monotonic() + 120
        while trainer.alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not trainer.alive(), "the site stopped instead of training on"
        assert trainer.process.returncode == 1
        log = trainer.log_path.read_text()
        assert (f"the federation now announces optimizer configuration {announced[:12]}, but "
                f"this site joined under {joined_under[:12]}") in log
        assert "restart the site to join the changed federation" in log
        assert not list((plan.root / "sites" / SITE / "models").rglob("*.safetensors")), \
            "nothing was trained or published under the changed configuration"
    finally:
        federation.stop()
