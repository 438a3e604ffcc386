"""The Helm charts render with Helm's own engine and every manifest is valid Kubernetes.

Rendering uses helm-python-sdk (Helm's Go SDK, offline); validation uses kubernetes-validate in
strict mode (unknown fields are errors) at the oldest and newest Kubernetes the charts support.
The Prometheus Operator's ServiceMonitor and PrometheusRule and cert-manager's Certificate and
Issuer are CRDs that kubernetes-validate does not bundle, so they are checked against the strict
schemas in deploy/helm/crd-schemas/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="pip install -e '.[deploy]' (helm-python-sdk)")
kubernetes_validate = pytest.importorskip("kubernetes_validate",
                                          reason="pip install -e '.[deploy]' (kubernetes-validate)")
jsonschema = pytest.importorskip("jsonschema")

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "helm"
CENTRAL = DEPLOY / "ucadi-central"
SITE = DEPLOY / "ucadi-site"
SERVICEMONITOR_SCHEMA = DEPLOY / "crd-schemas" / "servicemonitor-monitoring-v1.json"
PROMETHEUSRULE_SCHEMA = DEPLOY / "crd-schemas" / "prometheusrule-monitoring-v1.json"
CERT_MANAGER_SCHEMA = DEPLOY / "crd-schemas" / "certificate-cert-manager-v1.json"
# The charts declare kubeVersion >=1.27 (gRPC probes are GA there); check the newest bundled too.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())
RELEASE, NAMESPACE = "fed", "ucadi"

CENTRAL_REQUIRED: dict[str, Any] = {"federation": {"encryption": {"enabled": True,
                                                                  "keyId": "lwe-2026-01"}}}
# The public key of RFC 8032's first Ed25519 test vector: a well-formed custodian key.
CUSTODIAN_KEY = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
SITE_REQUIRED: dict[str, Any] = {
    "site": {"name": "main-campus"},
    "federation": {"aggregator": "central.example.org:7443", "crypto": "keys.example.org:7444",
                   "custodianKey": CUSTODIAN_KEY},
}


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `extra` merged in, nested mappings key by key."""
    merged = json.loads(json.dumps(base))
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def with_central(extra: dict[str, Any]) -> dict[str, Any]:
    """The central chart's required values merged with `extra`."""
    return deep_merge(CENTRAL_REQUIRED, extra)


def with_site(extra: dict[str, Any]) -> dict[str, Any]:
    """The site chart's required values merged with `extra`."""
    return deep_merge(SITE_REQUIRED, extra)


CENTRAL_CASES: dict[str, dict[str, Any]] = {
    "defaults": with_central({}),
    "servicemonitor-cidrs-tracing": with_central({
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus"}},
        "grafanaDashboard": {"enabled": True, "folder": "UCADI"},
        "aggregator": {"extraVolumes": [{"name": "hospital-ca", "configMap": {"name": "ca"}}],
                       "extraVolumeMounts": [{"name": "hospital-ca", "mountPath": "/etc/ca",
                                              "readOnly": True}]},
        "networkPolicy": {"siteCIDRs": ["203.0.113.0/24", "198.51.100.7/32"]},
        "tracing": {"otlpEndpoint": "http://otel-collector.observability:4317"},
    }),
    "persistence-off-unencrypted-trial": {
        "federation": {"encryption": {"enabled": False}, "model": {"preset": "cpu-small"}},
        "aggregator": {"persistence": {"enabled": False}},
        "crypto": {"persistence": {"enabled": False}, "replicas": 0}},
    "external-secrets-loadbalancer": with_central({
        "tls": {"aggregatorSecret": "agg-kit", "cryptoSecret": "crypto-kit"},
        "certManager": {"enabled": True, "caSecret": "federation-ca",
                        "dnsNames": {"aggregator": ["central.example.org"], "crypto": []}},
        "aggregator": {"service": {"type": "LoadBalancer", "annotations": {"a": "b"}},
                       "persistence": {"existingClaim": "fed-state"},
                       "config": {"federation": {"min_sites": 3}}},
        "networkPolicy": {"enabled": False},
        "imagePullSecrets": [{"name": "regcred"}],
    }),
}

SITE_CASES: dict[str, dict[str, Any]] = {
    "defaults": with_site({}),
    "gpu-off": with_site({"trainer": {
        "gpu": {"enabled": False},
        "extraVolumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "10Gi"}}],
        "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}}),
    "servicemonitor-and-tracing": with_site({
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "groups": ["ucadi-site"]},
        "grafanaDashboard": {"enabled": True},
        "tracing": {"otlpEndpoint": "http://otel-collector.observability:4317"},
        "networkPolicy": {"centralCIDRs": ["203.0.113.10/32"],
                          "extraEgress": [{"ports": [{"port": 4317, "protocol": "TCP"}]}]}}),
    "external-secret": with_site({"tls": {"secretName": "kit-main-campus"},
                                  "certManager": {"enabled": True, "issuerRef": {
                                      "name": "federation", "kind": "ClusterIssuer"}},
                                  "inference": {"config": {"batching": {"max_batch": 2}}}}),
    "persistence-off": with_site({"trainer": {"persistence": {"enabled": False}},
                                  "models": {"persistence": {"enabled": False}}}),
    "models-rwo-existing-data": with_site({
        "models": {"persistence": {"accessMode": "ReadWriteOnce"}},
        "trainer": {"data": {"existingClaim": "pacs-export"}}}),
    "inference-only": with_site({"trainer": {"enabled": False}, "inference": {"replicas": 3}}),
    "trainer-only": with_site({"inference": {"enabled": False}}),
    "data-import": with_site({"dataImport": {"enabled": True, "source": {
        "persistentVolumeClaim": {"claimName": "pacs-export", "readOnly": True}}}}),
}


def render(chart: Path, values: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Render `chart` with `values` through Helm's engine: (manifests, NOTES.txt text)."""
    with helm.Chart.load(chart) as loaded:
        rendered = loaded.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = ""
    manifests: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        manifests += [doc for doc in yaml.safe_load_all(text) if doc]
    return manifests, notes


def find(manifests: list[dict[str, Any]], kind: str, name_suffix: str) -> dict[str, Any]:
    """The one manifest of `kind` whose name ends with `name_suffix`."""
    hits = [m for m in manifests
            if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix)]
    assert len(hits) == 1, f"expected one {kind} *{name_suffix}: {[h['metadata'] for h in hits]}"
    return hits[0]


def workloads(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deployments and StatefulSets."""
    return [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Strict Kubernetes schema validation (ServiceMonitor: our strict CRD subset)."""
    crd_schemas = {"ServiceMonitor": SERVICEMONITOR_SCHEMA,
                   "PrometheusRule": PROMETHEUSRULE_SCHEMA,
                   "Certificate": CERT_MANAGER_SCHEMA, "Issuer": CERT_MANAGER_SCHEMA}
    if manifest["kind"] in crd_schemas:
        jsonschema.validate(manifest, json.loads(crd_schemas[manifest["kind"]].read_text()))
        return
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


ALL_CASES = [pytest.param(CENTRAL, v, id=f"central-{k}") for k, v in CENTRAL_CASES.items()] + \
            [pytest.param(SITE, v, id=f"site-{k}") for k, v in SITE_CASES.items()]


@pytest.mark.parametrize(("chart", "values"), ALL_CASES)
def test_every_rendered_manifest_validates_against_kubernetes_schemas(
        chart: Path, values: dict[str, Any]) -> None:
    manifests, notes = render(chart, values)
    assert workloads(manifests), "a release without workloads"
    for manifest in manifests:
        validate_manifest(manifest)
    assert notes.strip(), "NOTES.txt must tell the operator what to do next"


@pytest.mark.parametrize(("chart", "values"), ALL_CASES)
def test_every_container_runs_hardened_with_probes_and_mounted_tls(
        chart: Path, values: dict[str, Any]) -> None:
    manifests, _ = render(chart, values)
    for workload in workloads(manifests):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["resources"]["requests"] and container["resources"]["limits"]
            service = workload["metadata"]["labels"]["app.kubernetes.io/component"]
            assert container["args"] == ["serve", service, "--config", "/etc/ucadi/config.yaml"]
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["metrics"] == 9100
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["grpc"]["port"] == ports["health"]
                assert container[probe]["grpc"]["service"]
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert "secret" in volumes[mounts["/etc/ucadi/tls"]["name"]]
            assert mounts["/etc/ucadi/tls"]["readOnly"] is True
            assert mounts["/etc/ucadi/config.yaml"]["subPath"] == f"{service}.yaml"
            assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


@pytest.mark.parametrize(("chart", "values"), ALL_CASES)
def test_every_object_carries_the_recommended_labels(chart: Path, values: dict[str, Any]) -> None:
    manifests, _ = render(chart, values)
    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == chart.name
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/component"]
        assert manifest["metadata"]["namespace"] == NAMESPACE


def test_strict_validation_rejects_a_misspelled_field() -> None:
    manifests, _ = render(CENTRAL, CENTRAL_CASES["defaults"])
    deployment = find(manifests, "Deployment", "-aggregator")
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(deployment)


@pytest.mark.parametrize("chart", [CENTRAL, SITE], ids=lambda p: p.name)
def test_chart_passes_helm_lint_in_strict_mode(chart: Path) -> None:
    values = SITE_REQUIRED if chart == SITE else CENTRAL_REQUIRED
    report = helm.lint(chart, values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_shared_helpers_live_once_in_the_library_chart() -> None:
    """Both charts take names, labels, probes and the common environment from ucadi-common:
    no helper is defined twice, and each chart's charts/ucadi-common is that library."""
    library = DEPLOY / "ucadi-common"
    assert yaml.safe_load((library / "Chart.yaml").read_text())["type"] == "library"
    defined: dict[str, Path] = {}
    for helpers in sorted(DEPLOY.glob("*/templates/*.tpl")):
        for name in re.findall(r'define "([^"]+)"', helpers.read_text()):
            assert name not in defined, f"{name} defined in {defined.get(name)} and {helpers}"
            defined[name] = helpers
    for chart in (CENTRAL, SITE):
        assert (chart / "charts" / "ucadi-common").resolve() == library.resolve()
        dependencies = yaml.safe_load((chart / "Chart.yaml").read_text())["dependencies"]
        assert [d["name"] for d in dependencies] == ["ucadi-common"]
        own = [name for name, path in defined.items() if path.parent.parent == chart]
        assert own and all(name.startswith(chart.name + ".") for name in own), own
    assert "ucadi.labels" in defined and defined["ucadi.labels"].parent.parent == library


def test_both_charts_state_the_supported_helm_versions_and_the_readme_repeats_them() -> None:
    stated = {yaml.safe_load((chart / "Chart.yaml").read_text())["annotations"][
        "ucadi.io/supported-helm-versions"] for chart in (CENTRAL, SITE)}
    assert stated == {">=3.18.0 <5.0.0"}
    assert "Helm 3.18 or newer, or Helm 4" in (DEPLOY.parent / "README.md").read_text()
