"""A real Prometheus scrapes a running federation (aggregator, crypto service, trainers) and
the round metrics are queryable through its HTTP API. Needs the Debian `prometheus` package,
which `.ci/run` installs; skipped with the install command otherwise."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from test_deploy_prometheus import api, binary, wait_for

from ucadi.demo.federation import FederationPlan, LocalFederation
from ucadi.v1 import federation_pb2

pytestmark = pytest.mark.slow
SITES = ["main-campus", "nccid-uk"]


def query(base: str, expression: str) -> list[dict]:
    return api(base, "/api/v1/query", query=expression)["data"]["result"]


def test_prometheus_scrapes_round_metrics_from_a_running_federation(tmp_path, tiny_cohort):
    server = binary("prometheus")
    federation = LocalFederation(FederationPlan(
        root=tmp_path / "fed", manifest=tiny_cohort, sites=SITES, rounds=2, min_sites=2,
        recipe={"total_epochs": 2, "warmup_epochs": 1}, federation_id="scraped"))
    federation.provision()
    federation.create_key()
    prometheus = None
    log = (tmp_path / "prometheus.log").open("w")
    try:
        federation.start_crypto()
        federation.start_aggregator()
        for site in SITES:
            federation.start_trainer(site)
        targets = [f"127.0.0.1:{p.metrics_port}" for p in federation.processes.values()]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [{"job_name": "ucadi",
                                "static_configs": [{"targets": targets}]}]}))
        prometheus = subprocess.Popen(
            [server, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", "--web.listen-address=127.0.0.1:0"],
            stdout=log, stderr=subprocess.STDOUT)
        listening = re.compile(r'msg="Listening on" address=(127\.0\.0\.1:\d+)')
        base = "http://" + wait_for("Prometheus to listen", lambda: listening.search(
            (tmp_path / "prometheus.log").read_text())).group(1)
        federation.approve_sites(SITES)
        federation.wait_for(lambda s: s.current.state == federation_pb2.ROUND_STATE_COMPLETED,
                            timeout=600)
        wait_for("the completed round in Prometheus", lambda: query(
            base, 'ucadi_round_number{federation="scraped"} == 2'), timeout_s=30)
        uploaded = query(base, 'ucadi_upload_bytes_total{federation="scraped"}')
        assert float(uploaded[0]["value"][1]) > 0
        # Each target is scraped on its own 1 s clock: the crypto service's last contribution
        # can reach Prometheus after the aggregator's completed round does.
        wait_for("2 sites x 2 rounds of accepted contributions in Prometheus", lambda: query(
            base, 'sum(ucadi_sum_contributions_total{outcome="accepted"}) >= 4'), timeout_s=30)
        wait_for("both trainers' completed rounds in Prometheus", lambda: len(query(
            base, "ucadi_trainer_rounds_completed_total == 2")) == 2, timeout_s=30)
        up = query(base, 'up{job="ucadi"}')
        assert len(up) == len(targets)
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=10)
        log.close()
        federation.stop()
