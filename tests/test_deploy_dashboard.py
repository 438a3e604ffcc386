"""The Grafana dashboard and the alert rules name only metrics the services export.

The catalog is read from prometheus_client's registry after importing every service's metrics
module, so a renamed or dropped metric breaks this test rather than a blank Grafana panel.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "ucadi-federation.json"
RULES = DEPLOY / "prometheus" / "rules.yaml"
METRICS_MODULES = ("services.aggregator.metrics", "services.crypto.metrics",
                   "services.trainer.metrics", "services.inference.metrics",
                   "ucadi.ops.certificates", "ucadi.ops.memory")
METRIC_NAME = re.compile(r"\bucadi_[a-z0-9_]+")
# The series names Prometheus stores for each metric type (prometheus_client naming).
SERIES_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                   "summary": ("", "_sum", "_count"), "gauge": ("",), "info": ("_info",)}
# What the issue asks the dashboard to show: rounds, participation, traffic, crypto time,
# rejections, per-site validation, inference.
REQUIRED_ON_DASHBOARD = (
    "ucadi_round_number", "ucadi_round_state", "ucadi_round_duration_seconds_bucket",
    "ucadi_round_participants", "ucadi_round_expected_participants",
    "ucadi_upload_bytes_total", "ucadi_download_bytes_total",
    "ucadi_trainer_encrypt_seconds_bucket", "ucadi_trainer_decrypt_seconds_bucket",
    "ucadi_sum_seconds_bucket", "ucadi_uploads_rejected_total",
    "ucadi_site_validation_auc", "ucadi_site_validation_sensitivity",
    "ucadi_site_validation_specificity", "ucadi_inference_requests_total",
    "ucadi_inference_latency_seconds_bucket", "ucadi_inference_batch_size_bucket",
    "ucadi_inference_model_version", "ucadi_inference_queue_depth")


@pytest.fixture(scope="module")
def exported_series() -> set[str]:
    """Every ucadi_* series name the four services can expose."""
    for module in METRICS_MODULES:
        importlib.import_module(module)
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("ucadi_"):
            names |= {family.name + suffix for suffix in SERIES_SUFFIXES[family.type]}
    return names


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and variable queries."""
    queries = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    queries += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return queries


def test_dashboard_queries_name_only_exported_metrics(exported_series: set[str]) -> None:
    board = json.loads(DASHBOARD.read_text())
    used = {name for expr in dashboard_queries(board) for name in METRIC_NAME.findall(expr)}
    assert used, "the dashboard queries no ucadi metric"
    assert used <= exported_series, f"not exported by any service: {sorted(used - exported_series)}"


def test_dashboard_shows_rounds_traffic_crypto_sites_and_inference() -> None:
    board = json.loads(DASHBOARD.read_text())
    used = {name for expr in dashboard_queries(board) for name in METRIC_NAME.findall(expr)}
    assert set(REQUIRED_ON_DASHBOARD) <= used, sorted(set(REQUIRED_ON_DASHBOARD) - used)
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Rounds", "Traffic and encryption", "Sites", "Inference"]


def test_every_panel_queries_the_dashboard_datasource_variable() -> None:
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], f"panel {panel['title']!r} has no query"


def test_alert_rules_name_only_exported_metrics(exported_series: set[str]) -> None:
    rules = yaml.safe_load(RULES.read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used <= exported_series, f"not exported by any service: {sorted(used - exported_series)}"


def test_committed_dashboard_is_what_the_generator_builds() -> None:
    pytest.importorskip("grafana_foundation_sdk",
                        reason="pip install 'grafana-foundation-sdk==1769699379!11.6.0'")
    spec = importlib.util.spec_from_file_location("build_dashboard",
                                                  DEPLOY / "grafana" / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert builder.main(["--check"]) == 0, "run deploy/grafana/build_dashboard.py and commit"


def test_per_site_panels_draw_a_bounded_number_of_sites() -> None:
    """Issue 25: with 1,000 sites a per-site panel must not draw 1,000 bars or lines: every
    query drawn per site (legend {{site}}) keeps the furthest behind or lowest few."""
    board = json.loads(DASHBOARD.read_text())
    per_site = [target for panel in board["panels"] for target in panel.get("targets", [])
                if "{{site}}" in target.get("legendFormat", "")]
    assert len(per_site) >= 4
    for target in per_site:
        assert re.match(r"(topk|bottomk)\(\d+, ", target["expr"]), target["expr"]
