"""The site chart's hospital-access values: the radiologist's page (port, Secrets, history
volume, Ingress, NetworkPolicy), the gRPC caller policy and the headless inference Service;
rendered with Helm's engine, validated strictly, and the config file loads in the service."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy_charts import (
    NAMESPACE,
    RELEASE,
    SITE,
    SITE_CASES,
    find,
    helm,
    render,
    validate_manifest,
    with_site,
)

from services.inference.settings import DEFAULTS, caller_policy
from services.inference.web.settings import web_settings
from ucadi.ops.config import load_config

INGRESS_PEERS = [{"namespaceSelector": {"matchLabels": {
    "kubernetes.io/metadata.name": "ingress-nginx"}}}]
WEB_CASE = with_site({
    "inference": {
        "replicas": 2,
        "service": {"headless": True},
        "clients": {"siteCaSecret": "hospital-ca", "allowedRoles": ["pacs", "operator"]},
        "web": {"enabled": True, "clientCaSecret": "radiologist-ca", "tlsSecret": "page-cert",
                "historyRetentionDays": 14, "historyClaim": "page-history",
                "ingress": {"enabled": True, "className": "nginx",
                            "host": "ucadi.hospital.example", "tlsSecret": "page-ingress",
                            "annotations": {
                                "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS"}}}},
    "networkPolicy": {"webFrom": INGRESS_PEERS},
})
TOKEN_CASE = with_site({"inference": {
    "clients": {"mode": "token", "oidc": {"issuer": "https://login.hospital.example",
                                          "audience": "ucadi", "jwksSecret": "idp-jwks"}},
    "web": {"enabled": True, "auth": "header", "trustedProxies": ["10.2.0.0/16"]}}})


@functools.cache
def rendered(case: str) -> list[dict[str, Any]]:
    """The site chart rendered once per case (Helm's engine takes about a second)."""
    return render(SITE, {"web": WEB_CASE, "token": TOKEN_CASE,
                         "defaults": SITE_CASES["defaults"]}[case])[0]


@pytest.fixture(scope="module")
def web_manifests() -> list[dict[str, Any]]:
    return rendered("web")


def inference_config(manifests: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    text = find(manifests, "ConfigMap", "-config")["data"]["inference.yaml"]
    (tmp_path / "inference.yaml").write_text(text)
    return load_config(DEFAULTS, tmp_path / "inference.yaml", environ={})


@pytest.mark.parametrize("case", ["web", "token"])
def test_hospital_access_manifests_validate_strictly(case: str) -> None:
    for manifest in rendered(case):
        validate_manifest(manifest)


def test_the_page_gets_its_port_secrets_history_volume_ingress_and_peers(web_manifests):
    pod = find(web_manifests, "Deployment", "-inference")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "web", "containerPort": 8443, "protocol": "TCP"} in container["ports"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path, secret in (("/etc/ucadi/site-ca", "hospital-ca"),
                         ("/etc/ucadi/web-ca", "radiologist-ca"),
                         ("/etc/ucadi/web-tls", "page-cert")):
        assert volumes[mounts[path]]["secret"]["secretName"] == secret
    assert volumes[mounts["/var/lib/ucadi/web"]]["persistentVolumeClaim"] == {
        "claimName": "page-history"}
    service = find(web_manifests, "Service", "-inference")["spec"]
    assert service["clusterIP"] == "None"
    assert [p["name"] for p in service["ports"]] == ["grpc", "web"]
    ingress = find(web_manifests, "Ingress", "-web")["spec"]
    assert ingress["rules"][0]["http"]["paths"][0]["backend"]["service"] == {
        "name": f"{RELEASE}-ucadi-site-inference", "port": {"name": "web"}}
    assert ingress["tls"] == [{"hosts": ["ucadi.hospital.example"], "secretName": "page-ingress"}]
    policy = find(web_manifests, "NetworkPolicy", "-inference")["spec"]
    web_rule = next(r for r in policy["ingress"] if r["ports"][0]["port"] == "web")
    assert web_rule["from"] == INGRESS_PEERS


def test_the_generated_config_starts_the_page_and_the_caller_policy(web_manifests,
                                                                    tmp_path: Path):
    config = inference_config(web_manifests, tmp_path)
    page = web_settings(config, None)
    assert page.address == "0.0.0.0:8443" and page.auth == "certificate"
    assert page.client_ca_file == Path("/etc/ucadi/web-ca/ca.crt")
    assert page.tls_cert_file == Path("/etc/ucadi/web-tls/tls.crt")
    assert page.history_db == Path("/var/lib/ucadi/web/history.sqlite")
    assert page.history_retention_days == 14
    policy = caller_policy(config)
    assert policy.site_ca_file == Path("/etc/ucadi/site-ca/ca.crt")
    assert policy.allowed_roles == ("pacs", "operator") and policy.federation_ca
    token = inference_config(rendered("token"), tmp_path)
    assert token["clients"]["mode"] == "token"
    assert token["clients"]["oidc_jwks_file"] == "/etc/ucadi/oidc/jwks.json"
    assert token["web"]["trusted_proxies"] == ["10.2.0.0/16"]


def test_by_default_there_is_no_page_no_ingress_and_a_cluster_ip(tmp_path: Path):
    manifests = rendered("defaults")
    assert not [m for m in manifests if m["kind"] == "Ingress"]
    service = find(manifests, "Service", "-inference")["spec"]
    assert "clusterIP" not in service and [p["name"] for p in service["ports"]] == ["grpc"]
    assert web_settings(inference_config(manifests, tmp_path), None) is None


@pytest.mark.parametrize("values,where", [
    (with_site({"inference": {"web": {"enabled": True}}}), "clientCaSecret"),
    (with_site({"inference": {"clients": {"mode": "open"}}}), "/inference/clients/mode"),
    (with_site({"inference": {"web": {"enabled": True, "auth": "none"}}}),
     "/inference/web/auth"),
])
def test_schema_refuses_a_page_or_policy_that_cannot_work(values: dict[str, Any], where: str):
    with helm.Chart.load(SITE) as loaded:
        with pytest.raises(helm.HelmValuesError, match=where):
            loaded.render(values, name=RELEASE, namespace=NAMESPACE)


def test_values_document_the_new_settings():
    values = yaml.safe_load((SITE / "values.yaml").read_text())
    assert values["inference"]["web"]["enabled"] is False
    assert values["inference"]["service"]["headless"] is False
