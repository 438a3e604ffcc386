"""`ucadi site status` against a mocked Kubernetes API, and startup-kit Secrets built for real."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ucadi.cli import main
from ucadi.ops import k8s
from ucadi.ops.pki import create_ca, issue_certificate
from ucadi.ops.pki_cli import make_startup_kit

TRAINER_METRICS = """\
# HELP ucadi_trainer_last_round Last round this site uploaded to
# TYPE ucadi_trainer_last_round gauge
ucadi_trainer_last_round 12.0
# HELP ucadi_trainer_rounds_completed_total Rounds this site trained and uploaded
# TYPE ucadi_trainer_rounds_completed_total counter
ucadi_trainer_rounds_completed_total 12.0
"""


def pod(name: str, component: str, *, ready: bool = True, phase: str = "Running",
        restarts: int = 0) -> client.V1Pod:
    """A pod object as the API returns it for a ucadi-site release."""
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={k8s.INSTANCE_LABEL: "mc",
                                                        k8s.COMPONENT_LABEL: component}),
        spec=client.V1PodSpec(containers=[client.V1Container(name=component)], node_name="gpu-1"),
        status=client.V1PodStatus(
            phase=phase,
            conditions=[client.V1PodCondition(type="Ready", status=str(ready))],
            container_statuses=[client.V1ContainerStatus(
                name=component, ready=ready, restart_count=restarts, image="ucadi", image_id="")]))


def core_with(pods: list[client.V1Pod], metrics: str | Exception = TRAINER_METRICS) -> mock.Mock:
    """A CoreV1Api double answering the two calls `site status` makes."""
    core = mock.Mock(spec=client.CoreV1Api)
    core.list_namespaced_pod.return_value = client.V1PodList(items=pods)
    if isinstance(metrics, Exception):
        core.connect_get_namespaced_pod_proxy_with_path.side_effect = metrics
    else:
        core.connect_get_namespaced_pod_proxy_with_path.return_value = metrics
    return core


def test_status_lists_the_release_pods_with_readiness_restarts_and_last_round() -> None:
    core = core_with([pod("mc-ucadi-site-trainer-7d9", "trainer", restarts=2),
                      pod("mc-ucadi-site-inference-5f1", "inference", ready=False)])
    states = k8s.site_status(core, "mc", "hospital-a")
    core.list_namespaced_pod.assert_called_once_with(
        "hospital-a", label_selector="app.kubernetes.io/instance=mc", _request_timeout=10)
    core.connect_get_namespaced_pod_proxy_with_path.assert_called_once_with(
        "mc-ucadi-site-trainer-7d9:9100", "hospital-a", "metrics", _request_timeout=10)
    assert states == [
        k8s.PodState("mc-ucadi-site-inference-5f1", "inference", "Running", False, 0, "gpu-1"),
        k8s.PodState("mc-ucadi-site-trainer-7d9", "trainer", "Running", True, 2, "gpu-1", 12)]


def test_unreadable_trainer_metrics_leave_the_last_round_unknown() -> None:
    core = core_with([pod("mc-ucadi-site-trainer-7d9", "trainer")],
                     metrics=ApiException(status=503, reason="Service Unavailable"))
    assert k8s.site_status(core, "mc", "hospital-a")[0].last_round is None


def test_pending_trainer_is_not_asked_for_metrics() -> None:
    core = core_with([pod("mc-ucadi-site-trainer-7d9", "trainer", ready=False, phase="Pending")])
    assert k8s.site_status(core, "mc", "hospital-a")[0].phase == "Pending"
    core.connect_get_namespaced_pod_proxy_with_path.assert_not_called()


def test_a_release_without_pods_is_an_actionable_error() -> None:
    with pytest.raises(k8s.KubernetesError, match="check --release and --namespace"):
        k8s.site_status(core_with([]), "typo", "hospital-a")


def test_forbidden_listing_names_the_permission_needed() -> None:
    core = core_with([])
    core.list_namespaced_pod.side_effect = ApiException(status=403, reason="Forbidden")
    with pytest.raises(k8s.KubernetesError, match="403 Forbidden.*get/list on pods"):
        k8s.site_status(core, "mc", "hospital-a")


@pytest.mark.parametrize(("inference_ready", "exit_code"), [(True, 0), (False, 1)])
def test_status_command_exits_zero_only_when_every_pod_is_ready(
        inference_ready: bool, exit_code: int, capsys: pytest.CaptureFixture[str]) -> None:
    core = core_with([pod("mc-ucadi-site-trainer-7d9", "trainer"),
                      pod("mc-ucadi-site-inference-5f1", "inference", ready=inference_ready)])
    with mock.patch.object(k8s, "core_api", return_value=core) as factory:
        code = main(["site", "status", "--release", "mc", "--namespace", "hospital-a",
                     "--context", "hospital-a-admin"])
    factory.assert_called_once_with("hospital-a-admin")
    out = capsys.readouterr().out
    assert code == exit_code
    assert "mc-ucadi-site-trainer-7d9" in out and f"{int(inference_ready) + 1}/2 pods ready" in out


def test_status_command_prints_json_for_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    core = core_with([pod("mc-ucadi-site-trainer-7d9", "trainer")])
    with mock.patch.object(k8s, "core_api", return_value=core):
        assert main(["site", "status", "--release", "mc", "--namespace", "h", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["last_round"] == 12


def test_missing_kubeconfig_is_reported_as_one_line_exit_1(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["site", "status", "--release", "mc", "--namespace", "h"]) == 1
    assert "no Kubernetes credentials" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A federation CA for building startup kits."""
    return create_ca(tmp_path_factory.mktemp("ca"), "test-federation-ca")


def test_startup_kit_becomes_a_tls_secret_with_the_ca_and_endpoints(ca_dir: Path,
                                                                    tmp_path: Path) -> None:
    kit = make_startup_kit(ca_dir, tmp_path / "kit", "main-campus",
                           {"aggregator": "central.example.org:7443",
                            "crypto": "keys.example.org:7444"})
    secret = k8s.startup_kit_secret(kit, "ucadi-main-campus-tls", "hospital-a")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["namespace"] == "hospital-a"
    assert secret["metadata"]["labels"]["ucadi.io/site"] == "main-campus"
    for name in ("ca.crt", "tls.crt", "tls.key", "endpoints.yaml"):
        assert base64.b64decode(secret["data"][name]) == (kit / name).read_bytes()
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(secret, "1.27.0", strict=True)


def test_kit_without_endpoints_still_makes_a_secret(ca_dir: Path, tmp_path: Path) -> None:
    issue_certificate(ca_dir, tmp_path, "aggregator", "service")
    secret = k8s.startup_kit_secret(tmp_path, "aggregator-tls", "central")
    assert sorted(secret["data"]) == ["ca.crt", "tls.crt", "tls.key"]
    assert "ucadi.io/site" not in secret["metadata"]["labels"]


def test_kit_with_a_foreign_key_is_refused(ca_dir: Path, tmp_path: Path) -> None:
    issue_certificate(ca_dir, tmp_path / "a", "main-campus", "site")
    issue_certificate(ca_dir, tmp_path / "b", "main-campus", "site")
    (tmp_path / "a" / "tls.key").write_bytes((tmp_path / "b" / "tls.key").read_bytes())
    with pytest.raises(k8s.KubernetesError, match="tls.key is not the key of tls.crt"):
        k8s.startup_kit_secret(tmp_path / "a", "kit", "hospital-a")


@pytest.mark.parametrize(("name", "namespace", "message"), [
    ("Main_Campus", "hospital-a", "not a DNS subdomain"),
    ("kit", "Hospital A", "not a DNS label"),
    ("kit", "hospital-a", "lacks tls.key"),
])
def test_bad_names_and_incomplete_kits_are_refused(ca_dir: Path, tmp_path: Path, name: str,
                                                   namespace: str, message: str) -> None:
    issue_certificate(ca_dir, tmp_path, "main-campus", "site")
    (tmp_path / "tls.key").unlink()
    with pytest.raises(k8s.KubernetesError, match=message):
        k8s.startup_kit_secret(tmp_path, name, namespace)


def test_pki_kit_writes_the_secret_manifest_for_kubectl(ca_dir: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "secret.yaml"
    assert main(["pki", "kit", "--ca", str(ca_dir), "--site", "optical-valley",
                 "--out", str(tmp_path / "kit"), "--aggregator", "central.example.org:7443",
                 "--crypto", "keys.example.org:7444", "--k8s-secret", str(manifest),
                 "--namespace", "hospital-b"]) == 0
    secret: dict[str, Any] = yaml.safe_load(manifest.read_text())
    assert secret["metadata"] == {"name": "ucadi-optical-valley-tls", "namespace": "hospital-b",
                                  "labels": {"app.kubernetes.io/part-of": "ucadi",
                                             "app.kubernetes.io/component": "startup-kit",
                                             "ucadi.io/site": "optical-valley"}}


def test_without_the_k8s_extra_site_status_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """kubernetes is an extra (`ucadi[k8s]`): without it the command names what to install."""
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    with pytest.raises(k8s.KubernetesError, match=r"pip install 'ucadi\[k8s\]'"):
        k8s.core_api()
