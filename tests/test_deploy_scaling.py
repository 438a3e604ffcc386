"""Inference run with more than one replica gets a PodDisruptionBudget and spreads over nodes
and zones; one replica gets neither (the aggregator and, for now, the crypto service run one).
Extra volumes reach the pod and its container."""

from __future__ import annotations

from typing import Any

import pytest
from test_deploy_charts import CENTRAL, CENTRAL_CASES, SITE, SITE_CASES, find, render


def pod_of(manifests: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    """The pod template of a component's workload."""
    return find(manifests, kind, f"-{component}")["spec"]["template"]


def test_several_inference_replicas_get_a_disruption_budget_and_spread() -> None:
    manifests, _ = render(SITE, SITE_CASES["inference-only"])
    pod = pod_of(manifests, "Deployment", "inference")
    budget = find(manifests, "PodDisruptionBudget", "-inference")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    spread = pod["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname",
                                                  "topology.kubernetes.io/zone"}
    for constraint in spread:
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert constraint["labelSelector"]["matchLabels"].items() <= \
            pod["metadata"]["labels"].items()


@pytest.mark.parametrize(("chart", "values"), [(CENTRAL, CENTRAL_CASES["defaults"]),
                                               (SITE, SITE_CASES["defaults"])],
                         ids=["central", "site"])
def test_one_replica_gets_no_budget_and_no_spread(chart: Any, values: Any) -> None:
    manifests, _ = render(chart, values)
    assert not [m for m in manifests if m["kind"] == "PodDisruptionBudget"]
    for workload in (m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")):
        assert "topologySpreadConstraints" not in workload["spec"]["template"]["spec"]


@pytest.mark.parametrize(("chart", "values", "kind", "component", "volume", "path"), [
    (CENTRAL, CENTRAL_CASES["servicemonitor-cidrs-tracing"], "Deployment", "aggregator",
     "hospital-ca", "/etc/ca"),
    (SITE, SITE_CASES["gpu-off"], "Deployment", "trainer", "scratch", "/scratch"),
], ids=["aggregator", "trainer"])
def test_extra_volumes_are_added_to_the_pod_and_mounted(chart: Any, values: Any, kind: str,
                                                        component: str, volume: str,
                                                        path: str) -> None:
    manifests, _ = render(chart, values)
    spec = pod_of(manifests, kind, component)["spec"]
    assert volume in {v["name"] for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts[path] == volume
    assert mounts["/tmp"] == "tmp", "the chart's own mounts stay"
