"""cert-manager, when enabled, issues each party's certificate in the form `ucadi pki issue`
makes (CN name, OU role, server and client auth) into exactly the Secret the pods mount."""

from __future__ import annotations

from typing import Any

import pytest
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
    workloads,
)


def mounted_tls_secret(workload: dict[str, Any]) -> str:
    """The Secret mounted at /etc/ucadi/tls in a workload's first container."""
    pod = workload["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"]
                 if m["mountPath"] == "/etc/ucadi/tls")
    return next(v for v in pod["volumes"] if v["name"] == mount["name"])["secret"]["secretName"]


def certificates(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Certificates by the Secret they fill."""
    return {m["spec"]["secretName"]: m for m in manifests if m["kind"] == "Certificate"}


def test_central_certificates_fill_the_mounted_secrets_signed_by_the_releases_ca_issuer() -> None:
    manifests, _ = render(CENTRAL, CENTRAL_CASES["external-secrets-loadbalancer"])
    issuer = find(manifests, "Issuer", "-ca")
    assert issuer["spec"] == {"ca": {"secretName": "federation-ca"}}
    by_secret = certificates(manifests)
    for workload in workloads(manifests):
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        certificate = by_secret[mounted_tls_secret(workload)]
        assert certificate["spec"]["commonName"] == component
        assert certificate["spec"]["subject"]["organizationalUnits"] == ["service"]
        assert {"server auth", "client auth"} <= set(certificate["spec"]["usages"])
        assert certificate["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
    aggregator = by_secret["agg-kit"]["spec"]["dnsNames"]
    assert "central.example.org" in aggregator
    assert f"{RELEASE}-ucadi-central-aggregator.{NAMESPACE}.svc" in aggregator
    assert f"*.{RELEASE}-ucadi-central-crypto-replicas.{NAMESPACE}.svc" in \
        by_secret["crypto-kit"]["spec"]["dnsNames"]


def test_site_certificate_is_the_sites_identity_from_an_existing_issuer() -> None:
    manifests, _ = render(SITE, SITE_CASES["external-secret"])
    assert not [m for m in manifests if m["kind"] == "Issuer"]
    (certificate,) = certificates(manifests).values()
    assert {mounted_tls_secret(w) for w in workloads(manifests)} == {"kit-main-campus"}
    assert certificate["spec"]["secretName"] == "kit-main-campus"
    assert certificate["spec"]["commonName"] == "main-campus"
    assert certificate["spec"]["subject"]["organizationalUnits"] == ["site"]
    assert certificate["spec"]["issuerRef"] == {"name": "federation", "kind": "ClusterIssuer",
                                                "group": "cert-manager.io"}
    # Renewal starts before the expiry alert's 30 days.
    assert int(certificate["spec"]["renewBefore"].rstrip("h")) > 30 * 24


def test_certificates_are_off_by_default_and_need_an_issuer() -> None:
    manifests, _ = render(SITE, SITE_CASES["defaults"])
    assert not certificates(manifests)
    with helm.Chart.load(SITE) as loaded, pytest.raises(Exception, match="certManager.caSecret"):
        loaded.render(with_site({"certManager": {"enabled": True}}), name=RELEASE,
                      namespace=NAMESPACE)
