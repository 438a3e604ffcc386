"""Chart values do what values.yaml says; values.schema.json refuses bad values before rendering."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from test_deploy_charts import (
    CENTRAL,
    CENTRAL_CASES,
    CUSTODIAN_KEY,
    NAMESPACE,
    RELEASE,
    SITE,
    SITE_CASES,
    find,
    helm,
    render,
    with_central,
    with_site,
    workloads,
)


def pod_spec(manifests: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    """The pod template spec of one workload."""
    return find(manifests, kind, suffix)["spec"]["template"]["spec"]


def volume_for(pod: dict[str, Any], mount_path: str) -> dict[str, Any]:
    """The volume mounted at `mount_path` in the pod's first container."""
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == mount_path)
    return next(v for v in pod["volumes"] if v["name"] == mount["name"])


def config_file(manifests: list[dict[str, Any]], service: str) -> dict[str, Any]:
    """A service's generated /etc/ucadi/config.yaml."""
    return yaml.safe_load(find(manifests, "ConfigMap", "-config")["data"][f"{service}.yaml"])


def test_gpu_trainer_requests_the_gpu_on_gpu_nodes_with_the_cuda_image() -> None:
    manifests, _ = render(SITE, SITE_CASES["defaults"])
    pod = pod_spec(manifests, "Deployment", "-trainer")
    trainer = pod["containers"][0]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert trainer["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert trainer["image"].endswith(":0.1.0-cuda")
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        pod["tolerations"]
    assert volume_for(pod, "/dev/shm")["emptyDir"]["medium"] == "Memory"


def test_cpu_trainer_has_no_gpu_request_selector_or_cuda_image() -> None:
    manifests, _ = render(SITE, SITE_CASES["gpu-off"])
    pod = pod_spec(manifests, "Deployment", "-trainer")
    trainer = pod["containers"][0]
    assert "nvidia.com/gpu" not in trainer["resources"]["limits"]
    assert trainer["image"].endswith(":0.1.0")
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_inference_serves_on_the_kserve_port_and_reads_models_read_only() -> None:
    manifests, _ = render(SITE, SITE_CASES["defaults"])
    pod = pod_spec(manifests, "Deployment", "-inference")
    assert pod["containers"][0]["ports"][0] == {"name": "grpc", "containerPort": 8001,
                                                 "protocol": "TCP"}
    models = volume_for(pod, "/var/lib/ucadi/models")
    assert models["persistentVolumeClaim"] == {"claimName": f"{RELEASE}-ucadi-site-models",
                                               "readOnly": True}
    assert volume_for(pod_spec(manifests, "Deployment", "-trainer"), "/var/lib/ucadi/models") \
        ["persistentVolumeClaim"]["claimName"] == f"{RELEASE}-ucadi-site-models"
    assert "affinity" not in pod


def test_read_write_once_models_claim_pins_inference_next_to_the_trainer() -> None:
    manifests, notes = render(SITE, SITE_CASES["models-rwo-existing-data"])
    affinity = pod_spec(manifests, "Deployment", "-inference")["affinity"]["podAffinity"]
    term = affinity["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "trainer"
    data = volume_for(pod_spec(manifests, "Deployment", "-trainer"), "/data")
    assert data["persistentVolumeClaim"] == {"claimName": "pacs-export", "readOnly": True}
    assert not [m for m in manifests if m["metadata"]["name"].endswith("-data")]
    assert "pinned to the trainer's node" in notes


def test_state_lives_on_claims_kept_after_uninstall() -> None:
    manifests, _ = render(CENTRAL, CENTRAL_CASES["defaults"])
    claim = find(manifests, "PersistentVolumeClaim", "-aggregator-state")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    state = volume_for(pod_spec(manifests, "Deployment", "-aggregator"), "/var/lib/ucadi")
    assert state["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    crypto = find(manifests, "StatefulSet", "-crypto")["spec"]
    assert crypto["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    assert find(manifests, "Deployment", "-aggregator")["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize(("chart", "values"),
                         [(CENTRAL, CENTRAL_CASES["persistence-off-unencrypted-trial"]),
                          (SITE, SITE_CASES["persistence-off"])], ids=["central", "site"])
def test_persistence_off_uses_empty_dirs_and_warns(chart: Any, values: dict[str, Any]) -> None:
    manifests, notes = render(chart, values)
    assert not [m for m in manifests if m["kind"] == "PersistentVolumeClaim"]
    for workload in workloads(manifests):
        assert "volumeClaimTemplates" not in workload["spec"]
        pod = workload["spec"]["template"]["spec"]
        assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
    assert "WARNING" in notes


def test_external_secret_names_and_existing_claim_are_used_verbatim() -> None:
    manifests, notes = render(CENTRAL, CENTRAL_CASES["external-secrets-loadbalancer"])
    agg = pod_spec(manifests, "Deployment", "-aggregator")
    assert volume_for(agg, "/etc/ucadi/tls")["secret"]["secretName"] == "agg-kit"
    assert volume_for(agg, "/var/lib/ucadi")["persistentVolumeClaim"]["claimName"] == "fed-state"
    crypto = pod_spec(manifests, "StatefulSet", "-crypto")
    assert volume_for(crypto, "/etc/ucadi/tls")["secret"]["secretName"] == "crypto-kit"
    assert agg["imagePullSecrets"] == [{"name": "regcred"}]
    assert find(manifests, "Service", "-aggregator")["spec"]["type"] == "LoadBalancer"
    assert not [m for m in manifests if m["kind"] in ("NetworkPolicy", "PersistentVolumeClaim")]
    assert "agg-kit" in notes and "kubectl" in notes


def test_site_startup_kit_secret_defaults_to_the_pki_kit_name() -> None:
    manifests, notes = render(SITE, SITE_CASES["defaults"])
    for suffix in ("-trainer", "-inference"):
        pod = pod_spec(manifests, "Deployment", suffix)
        assert volume_for(pod, "/etc/ucadi/tls")["secret"]["secretName"] == "ucadi-main-campus-tls"
    assert "ucadi-main-campus-tls" in notes
    manifests, _ = render(SITE, SITE_CASES["external-secret"])
    for suffix in ("-trainer", "-inference"):
        pod = pod_spec(manifests, "Deployment", suffix)
        assert volume_for(pod, "/etc/ucadi/tls")["secret"]["secretName"] == "kit-main-campus"


def test_service_monitor_is_rendered_only_when_enabled() -> None:
    for chart, off, on in ((CENTRAL, CENTRAL_CASES["defaults"],
                            CENTRAL_CASES["servicemonitor-cidrs-tracing"]),
                           (SITE, SITE_CASES["defaults"],
                            SITE_CASES["servicemonitor-and-tracing"])):
        assert not [m for m in render(chart, off)[0] if m["kind"] == "ServiceMonitor"]
        monitor = find(render(chart, on)[0], "ServiceMonitor", "")
        assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"


def test_generated_config_files_carry_ports_paths_and_operator_overrides() -> None:
    manifests, _ = render(CENTRAL, CENTRAL_CASES["external-secrets-loadbalancer"])
    aggregator = config_file(manifests, "aggregator")
    assert aggregator["server"] == {
        "address": "0.0.0.0:7443", "metrics_address": "0.0.0.0:9100",
        "health_address": "0.0.0.0:9101", "tls_dir": "/etc/ucadi/tls",
        "state_dir": "/var/lib/ucadi",
        "crypto_address": f"{RELEASE}-ucadi-central-crypto.{NAMESPACE}.svc:7444"}
    assert aggregator["federation"]["min_sites"] == 3
    assert aggregator["encryption"] == {"enabled": True, "key_id": "lwe-2026-01",
                                        "parameter_set": ""}
    assert config_file(manifests, "crypto")["server"]["address"] == "0.0.0.0:7444"
    relayed = {**CENTRAL_CASES["external-secrets-loadbalancer"],
               "aggregator": {"config": {"server": {"site_contributions": False}}}}
    server = config_file(render(CENTRAL, relayed)[0], "aggregator")["server"]
    assert server["site_contributions"] is False, "an operator's false survives the merge"
    assert server["crypto_address"] == aggregator["server"]["crypto_address"]
    site = render(SITE, SITE_CASES["external-secret"])[0]
    trainer = config_file(site, "trainer")
    assert trainer["server"]["aggregator_address"] == "central.example.org:7443"
    assert trainer["server"]["crypto_address"] == "keys.example.org:7444"
    assert trainer["server"]["address"] == "0.0.0.0:7445"
    assert trainer["site"]["manifest"] == "/data/manifest.csv"
    assert trainer["site"]["custodian_key"] == CUSTODIAN_KEY
    inference = config_file(site, "inference")
    assert inference["server"]["address"] == "0.0.0.0:8001"
    assert inference["batching"] == {"max_batch": 2, "max_delay_ms": 10, "max_queue": 64}


def test_network_policies_open_only_the_federation_paths() -> None:
    manifests, _ = render(CENTRAL, CENTRAL_CASES["servicemonitor-cidrs-tracing"])
    agg = find(manifests, "NetworkPolicy", "-aggregator")["spec"]
    assert agg["ingress"][0]["from"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}},
                                         {"ipBlock": {"cidr": "198.51.100.7/32"}}]
    assert agg["egress"][0]["ports"] == [{"port": 7444, "protocol": "TCP"}]
    site = render(SITE, SITE_CASES["defaults"])[0]
    inference = find(site, "NetworkPolicy", "-inference")["spec"]
    assert inference["policyTypes"] == ["Ingress", "Egress"] and inference["egress"] == []
    trainer = find(site, "NetworkPolicy", "-trainer")["spec"]
    assert {p["port"] for p in trainer["egress"][0]["ports"]} == {7443, 7444}


def test_tracing_endpoint_reaches_every_container_as_otlp_environment() -> None:
    manifests, _ = render(SITE, SITE_CASES["servicemonitor-and-tracing"])
    for workload in workloads(manifests):
        env = {e["name"]: e.get("value") for e in
               workload["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
        assert env["OTEL_SERVICE_NAME"] == workload["metadata"]["labels"][
            "app.kubernetes.io/component"]


def test_disabled_components_render_nothing_of_theirs() -> None:
    manifests, _ = render(SITE, SITE_CASES["inference-only"])
    assert not [m for m in manifests if "trainer" in m["metadata"]["name"]]
    assert find(manifests, "Deployment", "-inference")["spec"]["replicas"] == 3
    manifests, _ = render(SITE, SITE_CASES["trainer-only"])
    assert not [m for m in manifests if "inference" in m["metadata"]["name"]]


def undocumented_values(values_yaml: str) -> list[str]:
    """Keys of a values.yaml with no comment line above them.

    A key inside a block introduced by a `# --` comment (a documented default object such as
    podSecurityContext) counts as documented by it.
    """
    lines = values_yaml.splitlines()
    open_blocks: list[tuple[int, bool]] = []  # (indent, documents its children)
    missing = []
    for number, line in enumerate(lines):
        key = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not key:
            continue
        indent = len(key.group(1))
        while open_blocks and open_blocks[-1][0] >= indent:
            open_blocks.pop()
        above = next((lines[i].strip() for i in range(number - 1, -1, -1) if lines[i].strip()),
                     "")
        if not above.startswith("#") and not any(doc for _, doc in open_blocks):
            missing.append(f"line {number + 1}: {line.strip()}")
        open_blocks.append((indent, above.startswith("# --")))
    return missing


@pytest.mark.parametrize("chart", [CENTRAL, SITE], ids=lambda p: p.name)
def test_values_yaml_documents_every_value(chart: Any) -> None:
    assert undocumented_values((chart / "values.yaml").read_text()) == []


def test_documentation_check_catches_an_undocumented_value() -> None:
    assert undocumented_values("# -- Documented.\na: 1\nb: 2\n") == ["line 3: b: 2"]


BAD_VALUES = [
    pytest.param(CENTRAL, with_central({"crypto": {"replicas": -1}}), "/crypto/replicas",
                 id="negative-replicas"),
    pytest.param(CENTRAL, with_central({"crypto": {"replicas": 2}}), "/crypto/replicas",
                 id="crypto-replicas-beyond-one"),
    pytest.param(CENTRAL, with_central({"federation": {"masking": {"threshold": -1}}}),
                 "/federation/masking/threshold", id="negative-mask-threshold"),
    pytest.param(SITE, with_site({"inference": {"replicas": -2}}), "/inference/replicas",
                 id="negative-inference-replicas"),
    pytest.param(CENTRAL, with_central({"federation": {"minSites": "two"}}), "/federation/minSites",
                 id="wrong-type"),
    pytest.param(SITE, with_site({"trainer": {"gpu": {"enabled": "yes"}}}), "/trainer/gpu/enabled",
                 id="wrong-type-bool"),
    pytest.param(SITE, {"federation": SITE_CASES["defaults"]["federation"]}, "name",
                 id="missing-site-name"),
    pytest.param(SITE, {"site": {"name": "main-campus"}}, "aggregator", id="missing-endpoints"),
    pytest.param(SITE, with_site({"federation": {"aggregator": "no-port"}}),
                 "/federation/aggregator", id="endpoint-without-port"),
    pytest.param(SITE, {"site": {"name": "main-campus"}, "federation": {
        "aggregator": "central.example.org:7443", "crypto": "keys.example.org:7444"}},
                 "custodianKey", id="missing-custodian-key"),
    pytest.param(SITE, with_site({"federation": {"custodianKey": "d75a98"}}),
                 "/federation/custodianKey", id="custodian-key-not-64-hex"),
    pytest.param(SITE, with_site({"site": {"name": "Main Campus"}}), "/site/name",
                 id="site-name-not-dns"),
    pytest.param(CENTRAL, with_central({"podSecurityContext": {"runAsNonRoot": False}}),
                 "/podSecurityContext/runAsNonRoot", id="root-pods"),
    pytest.param(CENTRAL,
                 with_central({"aggregator": {"persistence": {"accessMode": "ReadMostly"}}}),
                 "/aggregator/persistence/accessMode", id="bad-enum"),
    pytest.param(CENTRAL, with_central({"replicaCount": 2}), "replicaCount", id="unknown-key"),
]


@pytest.mark.parametrize(("chart", "values", "where"), BAD_VALUES)
def test_schema_rejects_bad_values_before_rendering(chart: Any, values: dict[str, Any],
                                                    where: str) -> None:
    with helm.Chart.load(chart) as loaded:
        with pytest.raises(helm.HelmValuesError, match=where):
            loaded.validate_schema(values)
        with pytest.raises(helm.HelmValuesError, match=where):
            loaded.render(values, name=RELEASE, namespace=NAMESPACE)


def test_contrast_augmentation_values_reach_the_trainer_config() -> None:
    default = config_file(render(SITE, with_site({}))[0], "trainer")["site"]
    assert (default["augment_contrast"], default["augment_contrast_probability"]) == ("", 0.5)
    values = with_site({"trainer": {"augmentContrast": "/data/augment/cyclegan",
                                    "augmentContrastProbability": 0.3}})
    site = config_file(render(SITE, values)[0], "trainer")["site"]
    assert site["augment_contrast"] == "/data/augment/cyclegan"
    assert site["augment_contrast_probability"] == 0.3
    for bad, where in (({"augmentContrastProbability": 1.5}, "augmentContrastProbability"),
                       ({"augmentContrast": "relative/dir"}, "augmentContrast")):
        with helm.Chart.load(SITE) as loaded, pytest.raises(helm.HelmValuesError, match=where):
            loaded.render(with_site({"trainer": bad}), name=RELEASE, namespace=NAMESPACE)
