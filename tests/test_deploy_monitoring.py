"""The charts ship the alert rules and the Grafana dashboard as optional objects: exactly the
groups of deploy/prometheus/rules.yaml that were asked for (which promtool accepts as rendered)
and exactly deploy/grafana/ucadi-federation.json, labelled for Grafana's dashboard sidecar."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from test_deploy_charts import (
    CENTRAL,
    CENTRAL_CASES,
    NAMESPACE,
    RELEASE,
    SITE,
    SITE_CASES,
    find,
    helm,
    render,
    with_site,
)

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULE_GROUPS = {group["name"]: group for group in
               yaml.safe_load((DEPLOY / "prometheus" / "rules.yaml").read_text())["groups"]}
DASHBOARD = json.loads((DEPLOY / "grafana" / "ucadi-federation.json").read_text())


def test_every_alert_belongs_to_one_of_the_three_shipped_groups() -> None:
    assert set(RULE_GROUPS) == {"ucadi-targets", "ucadi-central", "ucadi-site"}


@pytest.mark.parametrize(("chart", "values", "groups"), [
    (CENTRAL, CENTRAL_CASES["servicemonitor-cidrs-tracing"], ["ucadi-targets", "ucadi-central"]),
    (SITE, SITE_CASES["servicemonitor-and-tracing"], ["ucadi-site"]),
], ids=["central-default-groups", "site-chosen-group"])
def test_prometheus_rule_holds_the_chosen_groups_verbatim_and_promtool_accepts_them(
        chart: Path, values: dict, groups: list[str], tmp_path: Path) -> None:
    manifests, _ = render(chart, values)
    rule = find(manifests, "PrometheusRule", chart.name)
    assert rule["spec"]["groups"] == [RULE_GROUPS[name] for name in groups]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("needs the Debian package `prometheus` (promtool)")
    rendered = tmp_path / "rendered-rules.yaml"
    rendered.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run([promtool, "check", "rules", str(rendered)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_config_map_carries_the_dashboard_and_the_sidecar_label() -> None:
    manifests, _ = render(CENTRAL, CENTRAL_CASES["servicemonitor-cidrs-tracing"])
    board = find(manifests, "ConfigMap", "-dashboard")
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["metadata"]["annotations"] == {"grafana_folder": "UCADI"}
    assert json.loads(board["data"]["ucadi-federation.json"]) == DASHBOARD


def test_alerts_and_dashboard_are_rendered_only_when_enabled() -> None:
    for chart, values in ((CENTRAL, CENTRAL_CASES["defaults"]), (SITE, SITE_CASES["defaults"])):
        manifests, _ = render(chart, values)
        assert not [m for m in manifests if m["kind"] == "PrometheusRule"
                    or m["metadata"]["name"].endswith("-dashboard")]


def test_an_unknown_rule_group_is_refused_naming_the_accepted_ones() -> None:
    values = with_site({"prometheusRule": {"enabled": True, "groups": ["ucadi-sites"]}})
    with helm.Chart.load(SITE) as loaded, \
            pytest.raises(helm.HelmValuesError, match="/prometheusRule/groups"):
        loaded.render(values, name=RELEASE, namespace=NAMESPACE)


def test_strict_rule_schema_rejects_a_misspelled_rule_field() -> None:
    from test_deploy_charts import validate_manifest

    manifests, _ = render(SITE, SITE_CASES["servicemonitor-and-tracing"])
    rule = find(manifests, "PrometheusRule", SITE.name)
    rule["spec"]["groups"][0]["rules"][0]["annotation"] = {"summary": "typo"}
    with pytest.raises(Exception, match="annotation"):
        validate_manifest(rule)


def test_a_packaged_chart_carries_the_rules_and_dashboard_themselves(tmp_path: Path) -> None:
    """files/ are links in a checkout; `helm package` must put their content in the archive."""
    archive = tarfile.open(helm.package(SITE, destination=tmp_path))
    for name, source in (("rules.yaml", DEPLOY / "prometheus" / "rules.yaml"),
                         ("ucadi-federation.json", DEPLOY / "grafana" / "ucadi-federation.json")):
        member = archive.getmember(f"ucadi-site/files/{name}")
        assert member.isfile() and archive.extractfile(member).read() == source.read_bytes()
