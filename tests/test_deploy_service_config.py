"""The charts start the services the way the services accept: the container arguments parse with
the real `ucadi` CLI, and each generated config file loads against that service's own DEFAULTS
(ucadi/ops/config.py refuses unknown settings, so a chart/service mismatch fails here, not in a
hospital's cluster)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy_charts import CENTRAL, CENTRAL_CASES, SITE, SITE_CASES, render, workloads

from ucadi.cli import build_parser
from ucadi.errors import UcadiError
from ucadi.ops.config import load_config

# service -> (chart, values, module holding its DEFAULTS)
SERVICES: dict[str, tuple[Path, dict[str, Any], str]] = {
    "aggregator": (CENTRAL, CENTRAL_CASES["defaults"], "services.aggregator.config"),
    "crypto": (CENTRAL, CENTRAL_CASES["defaults"], "services.crypto.server"),
    "trainer": (SITE, SITE_CASES["defaults"], "services.trainer.server"),
    "inference": (SITE, SITE_CASES["defaults"], "services.inference.settings"),
}


def rendered_service(service: str) -> tuple[list[str], dict[str, Any]]:
    """The container args and the parsed config file the chart gives `service`."""
    chart, values, _ = SERVICES[service]
    manifests, _ = render(chart, values)
    workload = next(w for w in workloads(manifests)
                    if w["metadata"]["labels"]["app.kubernetes.io/component"] == service)
    config_map = next(m for m in manifests if m["kind"] == "ConfigMap")
    args = workload["spec"]["template"]["spec"]["containers"][0]["args"]
    return args, yaml.safe_load(config_map["data"][f"{service}.yaml"])


@pytest.mark.parametrize("service", SERVICES)
def test_container_arguments_parse_with_the_ucadi_cli(service: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    args, _ = rendered_service(service)
    try:
        parsed = build_parser("serve").parse_args(args)
    except SystemExit:
        pytest.fail(f"`ucadi {' '.join(args)}` is refused: {capsys.readouterr().err.strip()}")
    assert parsed.service == service
    assert Path(parsed.config) == Path("/etc/ucadi/config.yaml")


@pytest.mark.parametrize("service", SERVICES)
def test_generated_config_loads_against_the_service_defaults(service: str,
                                                             tmp_path: Path) -> None:
    _, config = rendered_service(service)
    module = importlib.import_module(SERVICES[service][2])
    defaults = getattr(module, "DEFAULTS", None)
    assert defaults is not None, f"{module.__name__} has no DEFAULTS for `--config` files"
    path = tmp_path / f"{service}.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(defaults, path, environ={})
    assert loaded["server"]["tls_dir"] == "/etc/ucadi/tls"
    assert loaded["server"]["metrics_address"] == "0.0.0.0:9100"


def test_the_optimizer_values_become_the_federation_the_aggregator_announces(
        tmp_path: Path) -> None:
    from services.aggregator.config import DEFAULTS, build_federation_config
    from ucadi.learn.server_opt import FederatedOptimization

    values = {**CENTRAL_CASES["defaults"]}
    values["federation"] = {**values.get("federation", {}), "optimizer": {
        "server": "fedadam", "serverLr": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 0.001,
        "proximalMu": 0.05, "localBatchnorm": True}}
    manifests, _ = render(CENTRAL, values)
    config_map = next(m for m in manifests if m["kind"] == "ConfigMap")
    path = tmp_path / "aggregator.yaml"
    path.write_text(config_map["data"]["aggregator.yaml"])
    config = load_config(DEFAULTS, path, environ={})
    config["encryption"]["key_id"] = "00" * 16
    announced = build_federation_config(config).model["optimizer_json"]
    assert FederatedOptimization.from_dict(yaml.safe_load(announced)) == FederatedOptimization(
        server="fedadam", server_lr=0.01, proximal_mu=0.05, local_batchnorm=True)


def test_without_a_key_id_the_aggregator_learns_the_active_key_from_the_key_service(
        tmp_path: Path) -> None:
    """keyId may stay empty: the chart renders, and the aggregator's config then names no key
    (services/aggregator/config.py: it asks the crypto service for the active one at start)."""
    manifests, _ = render(CENTRAL, {})
    config_map = next(m for m in manifests if m["kind"] == "ConfigMap")
    config = yaml.safe_load(config_map["data"]["aggregator.yaml"])
    assert config["encryption"]["enabled"] is True and config["encryption"]["key_id"] == ""
    path = tmp_path / "aggregator.yaml"
    path.write_text(yaml.safe_dump(config))
    from services.aggregator.config import DEFAULTS
    assert load_config(DEFAULTS, path, environ={})["encryption"]["key_id"] == ""


def test_masking_values_reach_the_aggregators_federation_settings(tmp_path: Path) -> None:
    """federation.masking in the central chart becomes the aggregator's pairwise-mask settings."""
    from test_deploy_charts import with_central

    from services.aggregator.config import DEFAULTS, build_federation_config

    values = with_central({"federation": {"masking": {"enabled": False, "threshold": 3,
                                                      "phaseTimeoutSeconds": 45}}})
    manifests, _ = render(CENTRAL, values)
    config_map = next(m for m in manifests if m["kind"] == "ConfigMap")
    path = tmp_path / "aggregator.yaml"
    path.write_text(config_map["data"]["aggregator.yaml"])
    federation = build_federation_config(load_config(DEFAULTS, path, environ={}))
    assert federation.pairwise_masks is False, "an operator can choose the shared-key mode"
    assert federation.mask_threshold == 3 and federation.mask_phase_timeout_s == 45.0
    _, default_config = rendered_service("aggregator")
    assert default_config["federation"]["pairwise_masks"] is True  # on by default
    # Masks need a second site to pair with: a one-site quorum is refused, naming the way out.
    config = load_config(DEFAULTS, path, environ={})
    config["federation"].update(min_sites=1, pairwise_masks=True)
    with pytest.raises(UcadiError, match="min_sites is 1, but pairwise masks .* need at least "
                                         "2 sites .* or pairwise_masks: false"):
        build_federation_config(config)
    config["federation"]["pairwise_masks"] = False
    assert build_federation_config(config).min_sites == 1
