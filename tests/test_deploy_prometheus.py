"""Alert rules pass promtool, and a real Prometheus evaluates them and every dashboard query.

Needs the Debian `prometheus` package (server + promtool); `.ci/run` installs it. The exporter
is a child process that imports the four services' metrics modules, fills every series and
keeps them moving, so rates and histogram quantiles have data without touching this process's
metric registry.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yaml"
RULES_TEST = DEPLOY / "prometheus" / "rules_test.yaml"
DASHBOARD = DEPLOY / "grafana" / "ucadi-federation.json"
INSTALL_HINT = ("needs the Debian package `prometheus` (promtool + server): "
                "apt-get update && apt-get install -y --no-install-recommends prometheus")
STARTUP_TIMEOUT_S = 30.0
# Grafana fills these in; any value that makes the query valid and non-empty will do.
DASHBOARD_VARIABLES = {"$__rate_interval": "20s", "$federation": ".*", "$site": ".*",
                       "$inference": ".*"}
ALERTS = {"UcadiSiteMissingRounds", "UcadiRoundStuck", "UcadiGlobalSumRefused",
          "UcadiInferenceErrorRate", "UcadiTargetDown", "UcadiMetricsAbsent",
          "UcadiInferenceNoModel", "UcadiSumServiceMemoryHigh", "UcadiCertificateExpiring"}

EXPORTER = """
import sys, time
from prometheus_client import start_http_server
from services.aggregator import metrics as agg
from services.crypto import metrics as crypto
from services.trainer import metrics as trainer
from services.inference import metrics as inference
from ucadi.ops import certificates, memory

fed = "covid-ct"
agg.ROUND_NUMBER.labels(fed).set(7)
agg.set_round_state(fed, "collecting")
agg.ROUND_PARTICIPANTS.labels(fed).set(3)
agg.ROUND_EXPECTED.labels(fed).set(4)
agg.ROUND_DEADLINE.labels(fed).set(time.time() + 600)
agg.ROUND_SEALED.labels(fed).set(0)
for site, last in (("main-campus", 7), ("nccid-uk", 3)):
    agg.SITE_LAST_ROUND.labels(fed, site).set(last)
    agg.SITE_AUC.labels(fed, site).set(0.95)
    agg.SITE_SENSITIVITY.labels(fed, site).set(0.9)
    agg.SITE_SPECIFICITY.labels(fed, site).set(0.93)
crypto.WRAPPED_KEYS_STORED.set(4)
trainer.LAST_ROUND.set(7)
inference.MODEL_VERSION.set(7)
inference.QUEUE_DEPTH.set(2)
certificates.CERT_EXPIRY.labels("leaf").set(time.time() + 400 * 86400)
certificates.CERT_EXPIRY.labels("ca").set(time.time() + 3000 * 86400)
memory.MEMORY_LIMIT.set(memory.memory_limit_bytes())
server, _ = start_http_server(0, addr="127.0.0.1")
print(server.server_port, flush=True)
while True:
    agg.ROUND_DURATION.labels(fed).observe(42.0)
    agg.UPLOAD_BYTES.labels(fed).inc(4 << 20)
    agg.DOWNLOAD_BYTES.labels(fed).inc(4 << 20)
    agg.UPLOADS_REJECTED.labels(fed, "layout_mismatch").inc()
    crypto.SUM_SECONDS.observe(0.3)
    crypto.SUM_CONTRIBUTIONS.labels("accepted").inc()
    crypto.SUM_BYTES.inc(4 << 20)
    crypto.KEY_REGISTRATIONS.inc()
    for histogram, seconds in ((trainer.TRAIN_SECONDS, 30), (trainer.ENCRYPT_SECONDS, 0.4),
                               (trainer.DECRYPT_SECONDS, 0.3)):
        histogram.observe(seconds)
    trainer.ROUNDS_COMPLETED.inc()
    inference.REQUESTS.labels("ModelInfer", "OK").inc(9)
    inference.REQUESTS.labels("ModelInfer", "RESOURCE_EXHAUSTED").inc()
    inference.LATENCY.labels("ModelInfer").observe(0.05)
    inference.BATCH_SIZE.observe(4)
    time.sleep(0.2)
"""


def binary(name: str) -> str:
    """Path of a Prometheus binary, or skip the test saying how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"`{name}` not found: {INSTALL_HINT}")
    return path


def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run([binary("promtool"), "check", "rules", str(RULES)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_fire_each_alert_on_synthetic_series() -> None:
    tested = {t["alertname"] for case in yaml.safe_load(RULES_TEST.read_text())["tests"]
              for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert tested == ALERTS
    result = subprocess.run([binary("promtool"), "test", "rules", str(RULES_TEST)],
                            capture_output=True, text=True, timeout=120, cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def wait_for(what: str, probe: Any, timeout_s: float = STARTUP_TIMEOUT_S) -> Any:
    """Poll `probe` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def closed_port() -> int:
    """A loopback port nothing listens on (bound once by the OS, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def api(base: str, path: str, **params: str) -> dict[str, Any]:
    """GET a Prometheus HTTP API endpoint; returns the decoded JSON body."""
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1 scraping the metrics exporter, with the rules loaded."""
    server = binary("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    exporter = subprocess.Popen([sys.executable, "-c", EXPORTER], stdout=subprocess.PIPE,
                                text=True, cwd=Path(__file__).resolve().parents[1])
    log = (work / "prometheus.log").open("w")
    process = None
    try:
        port = int(exporter.stdout.readline())
        (work / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "ucadi", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
                # A target nothing listens on: UcadiTargetDown turns pending.
                {"job_name": "ucadi-gone",
                 "static_configs": [{"targets": [f"127.0.0.1:{closed_port()}"]}]}]}))
        process = subprocess.Popen(
            [server, f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'data'}", "--web.listen-address=127.0.0.1:0"],
            stdout=log, stderr=subprocess.STDOUT)
        listening = re.compile(r'msg="Listening on" address=(127\.0\.0\.1:\d+)')
        address = wait_for("Prometheus to listen",
                            lambda: listening.search((work / "prometheus.log").read_text()))
        base = f"http://{address.group(1)}"
        wait_for("three scrapes of the exporter", lambda: api(
            base, "/api/v1/query", query='count_over_time(up{job="ucadi"}[1m]) >= 3'
        )["data"]["result"])
        yield base
    finally:
        for child in (process, exporter):
            if child is not None:
                child.terminate()
                child.wait(timeout=10)
        log.close()


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables filled in) for every panel query."""
    board = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in DASHBOARD_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


def test_every_dashboard_query_returns_data_from_scraped_services(prometheus: str) -> None:
    empty = []
    for title, expr in dashboard_queries():
        body = api(prometheus, "/api/v1/query", query=expr)
        assert body["status"] == "success", (title, expr, body)
        if not body["data"]["result"]:
            empty.append((title, expr))
    assert not empty, f"queries with no data although every metric is exported: {empty}"


def test_prometheus_loads_the_alert_rules_and_evaluates_them(prometheus: str) -> None:
    # The exporter's nccid-uk is 4 rounds behind, 10 % of its requests fail and the second
    # target is down: those alerts turn pending (their `for:` has not elapsed); the round's
    # deadline is still ahead, a model is loaded, certificates are valid for a year and more,
    # and the exporter is no sum service.
    expected = {"UcadiSiteMissingRounds": "pending", "UcadiInferenceErrorRate": "pending",
                "UcadiTargetDown": "pending", "UcadiRoundStuck": "inactive",
                "UcadiGlobalSumRefused": "inactive", "UcadiMetricsAbsent": "inactive",
                "UcadiInferenceNoModel": "inactive", "UcadiSumServiceMemoryHigh": "inactive",
                "UcadiCertificateExpiring": "inactive"}
    last: dict[str, str] = {}

    def settled() -> bool:
        rules = [rule for group in api(prometheus, "/api/v1/rules")["data"]["groups"]
                 for rule in group["rules"]]
        assert all(rule["health"] == "ok" for rule in rules), rules
        last.clear()
        last.update({rule["name"]: rule["state"] for rule in rules})
        return last == expected

    try:
        wait_for("the alert rules to reach their expected states", settled)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last states: {last}") from exc
