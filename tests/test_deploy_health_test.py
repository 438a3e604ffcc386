"""`helm test` checks the gRPC health of every service the release runs: the hook Pod runs
`ucadi health` against a health Service per component, which selects that component's pods on
their health port; `ucadi health` itself is run here against a real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_deploy_charts import CENTRAL, CENTRAL_CASES, SITE, SITE_CASES, find, render, workloads

from ucadi.ops.serving import serve

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("chart", "values"), [
    (CENTRAL, CENTRAL_CASES["defaults"]), (SITE, SITE_CASES["defaults"]),
    (SITE, SITE_CASES["inference-only"])], ids=["central", "site", "site-inference-only"])
def test_helm_test_pod_checks_every_running_components_health_service(
        chart: Path, values: dict[str, Any]) -> None:
    manifests, _ = render(chart, values)
    pod = find(manifests, "Pod", "-test-health")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    targets = dict(arg.split("=") for arg in container["args"] if "=" in arg)
    checked = set()
    for workload in workloads(manifests):
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        spec = workload["spec"]["template"]["spec"]["containers"][0]
        service = find(manifests, "Service", f"-{component}-health")
        port = service["spec"]["ports"][0]
        assert f"{service['metadata']['name']}:{port['port']}" in targets
        assert targets[f"{service['metadata']['name']}:{port['port']}"] == \
            spec["readinessProbe"]["grpc"]["service"]
        assert port["targetPort"] in {p["name"] for p in spec["ports"]}
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        checked.add(component)
    assert len(checked) == len(targets)
    policy = find(manifests, "NetworkPolicy", "-health-test")
    source = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert source.items() <= pod["metadata"]["labels"].items()


def test_ucadi_health_exits_0_when_all_serve_and_1_naming_the_one_that_does_not() -> None:
    running = serve(lambda server: None, service_names=["ucadi.v1.SumService"], tls=None,
                    health_address="127.0.0.1:0", metrics_address=None)
    try:
        target = f"127.0.0.1:{running.health_port}"

        def health(*targets: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "ucadi.cli", "health", "--timeout",
                                   "5", *targets], capture_output=True, text=True, cwd=REPO,
                                  timeout=60)

        ok = health(f"{target}=ucadi.v1.SumService", target)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.splitlines() == [f"{target} ucadi.v1.SumService SERVING",
                                          f"{target} (server) SERVING"]
        failed = health(f"{target}=ucadi.v1.SumService", f"{target}=ucadi.v1.Nothing")
        assert failed.returncode == 1
        assert f"{target} ucadi.v1.Nothing NOT_FOUND" in failed.stdout
        assert "1 of 2 not serving" in failed.stderr
        usage = health("no-port")
        assert usage.returncode == 2 and "HOST:PORT[=SERVICE]" in usage.stderr
    finally:
        running.stop(0)
