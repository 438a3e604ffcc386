"""UCADI on Kubernetes: `ucadi site status`, and a site's startup kit as a Secret manifest.

A thin layer over the official `kubernetes` client: the site release's pods are found by the
chart's `app.kubernetes.io/instance` label; the trainer's last completed round is read from its
own Prometheus endpoint (`ucadi_trainer_last_round`) through the API server's pod proxy, so the
operator needs only kubectl-level access, not a federation certificate.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from ucadi.errors import UcadiError

INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
TRAINER_COMPONENT = "trainer"
# The charts' metrics port (values `ports.metrics`) and the trainer's round gauge on it.
METRICS_PORT = 9100
LAST_ROUND_METRIC = "ucadi_trainer_last_round"
# Seconds for one API call; status must answer promptly even when the cluster is slow.
API_TIMEOUT_S = 10
KIT_FILES = ("ca.crt", "tls.crt", "tls.key")
ENDPOINTS_FILE = "endpoints.yaml"
# RFC 1123 subdomain (Secret names) and label (namespaces), as Kubernetes validates them.
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class KubernetesError(UcadiError):
    """The cluster could not be reached or refused a request, or a manifest cannot be built."""


@dataclass(frozen=True)
class PodState:
    """One pod of a site release as an operator sees it."""

    name: str
    component: str
    phase: str
    ready: bool
    restarts: int
    node: str
    last_round: int | None = None


def startup_kit_secret(kit_dir: Path, name: str, namespace: str) -> dict[str, Any]:
    """A `kubernetes.io/tls` Secret manifest (plus ca.crt, endpoints.yaml) from a startup kit."""
    kit_dir = Path(kit_dir)
    if not DNS_SUBDOMAIN.match(name) or len(name) > 253:
        raise KubernetesError(f"Secret name {name!r} is not a DNS subdomain (lowercase letters, "
                              "digits, '-' and '.', at most 253 characters)")
    if not DNS_LABEL.match(namespace) or len(namespace) > 63:
        raise KubernetesError(f"namespace {namespace!r} is not a DNS label (lowercase letters, "
                              "digits and '-', at most 63 characters)")
    missing = [f for f in KIT_FILES if not (kit_dir / f).is_file()]
    if missing:
        raise KubernetesError(f"startup kit {kit_dir} lacks {', '.join(missing)}; a kit holds "
                              f"{', '.join(KIT_FILES)} (make one with `ucadi pki kit`)")
    files = {f: (kit_dir / f).read_bytes() for f in KIT_FILES}
    _check_key_matches_certificate(files["tls.crt"], files["tls.key"], kit_dir)
    labels = {"app.kubernetes.io/part-of": "ucadi", "app.kubernetes.io/component": "startup-kit"}
    endpoints_path = kit_dir / ENDPOINTS_FILE
    if endpoints_path.is_file():
        files[ENDPOINTS_FILE] = endpoints_path.read_bytes()
        site = (yaml.safe_load(files[ENDPOINTS_FILE]) or {}).get("site")
        if isinstance(site, str) and DNS_LABEL.match(site):
            labels["ucadi.io/site"] = site
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "type": "kubernetes.io/tls",
        "data": {f: base64.b64encode(content).decode("ascii") for f, content in files.items()},
    }


def _check_key_matches_certificate(cert_pem: bytes, key_pem: bytes, kit_dir: Path) -> None:
    """Refuse a kit whose private key does not belong to its certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise KubernetesError(f"startup kit {kit_dir}: tls.crt/tls.key are not PEM "
                              f"certificate/unencrypted key: {exc}") from exc
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (cert.public_key().public_bytes(serialization.Encoding.DER, spki)
            != key.public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise KubernetesError(f"startup kit {kit_dir}: tls.key is not the key of tls.crt; "
                              "re-issue the kit with `ucadi pki kit`")


def core_api(context: str | None = None) -> Any:
    """A CoreV1Api from the kubeconfig (or the in-cluster service account)."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise KubernetesError("this command talks to the Kubernetes API and needs the "
                              "kubernetes package: pip install 'ucadi[k8s]'") from None

    try:
        config.load_kube_config(context=context)
    except (config.ConfigException, FileNotFoundError) as kube_exc:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            raise KubernetesError(f"no Kubernetes credentials: {kube_exc}; set KUBECONFIG or "
                                  "--context, or run inside the cluster") from kube_exc
    return client.CoreV1Api()


def _api_call(what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one API call, turning client failures into a message an operator can act on."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return call(*args, _request_timeout=API_TIMEOUT_S, **kwargs)
    except ApiException as exc:
        hint = {401: "your credentials were refused; refresh the kubeconfig",
                403: "your account may not do this; ask for get/list on pods (and pods/proxy)",
                404: "it does not exist"}.get(exc.status or 0, "the API server refused it")
        raise KubernetesError(f"{what}: HTTP {exc.status} {exc.reason}: {hint}") from exc
    except HTTPError as exc:
        raise KubernetesError(f"{what}: cannot reach the API server ({exc})") from exc


def trainer_last_round(core: Any, pod: str, namespace: str) -> int | None:
    """The trainer's `ucadi_trainer_last_round` via the pod proxy; None if unreadable."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = _api_call(f"reading metrics of pod {pod}",
                         core.connect_get_namespaced_pod_proxy_with_path,
                         f"{pod}:{METRICS_PORT}", namespace, "metrics")
    except KubernetesError:
        # A network policy or RBAC may hide metrics; the pod table is still worth showing.
        return None
    for family in text_string_to_metric_families(text):
        if family.name == LAST_ROUND_METRIC and family.samples:
            return int(family.samples[0].value)
    return None


def _pod_state(pod: Any) -> PodState:
    """Readiness, restarts and placement of one pod object."""
    statuses = pod.status.container_statuses or []
    conditions = pod.status.conditions or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return PodState(name=pod.metadata.name,
                    component=(pod.metadata.labels or {}).get(COMPONENT_LABEL, "?"),
                    phase=pod.status.phase or "Unknown", ready=ready,
                    restarts=sum(s.restart_count or 0 for s in statuses),
                    node=(pod.spec.node_name if pod.spec else None) or "-")


def site_status(core: Any, release: str, namespace: str) -> list[PodState]:
    """The release's pods with readiness, restarts and, for running trainers, the last round."""
    pods = _api_call(f"listing pods of release {release!r} in namespace {namespace!r}",
                     core.list_namespaced_pod, namespace,
                     label_selector=f"{INSTANCE_LABEL}={release}")
    if not pods.items:
        raise KubernetesError(f"no pods with {INSTANCE_LABEL}={release} in namespace "
                              f"{namespace!r}; check --release and --namespace "
                              f"(`helm list -n {namespace}`)")
    states = []
    for pod in sorted(pods.items, key=lambda p: p.metadata.name):
        state = _pod_state(pod)
        if state.component == TRAINER_COMPONENT and state.phase == "Running":
            state = replace(state, last_round=trainer_last_round(core, state.name, namespace))
        states.append(state)
    return states


def _print_status(release: str, namespace: str, states: list[PodState]) -> None:
    """A table of the release's pods (round: the trainer's last completed round), then a summary."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"site release {release} (namespace {namespace})", box=box.SIMPLE,
                  show_edge=False, pad_edge=False, collapse_padding=True)
    # Pod names are what an operator copies into kubectl: never wrap or crop them.
    table.add_column("pod", no_wrap=True, width=max(len(s.name) for s in states))
    table.add_column("component", min_width=len("inference"))
    for column in ("phase", "ready", "restarts", "round"):
        table.add_column(column, min_width=len(column))
    for s in states:
        table.add_row(s.name, s.component, s.phase, "yes" if s.ready else "NO", str(s.restarts),
                      "-" if s.last_round is None else str(s.last_round))
    console = Console()
    console.print(table)
    ready = sum(s.ready for s in states)
    console.print(f"{ready}/{len(states)} pods ready")


def _status_command(args: argparse.Namespace) -> int:
    """`ucadi site status`: 0 when every pod is ready, 1 otherwise."""
    states = site_status(core_api(args.context), args.release, args.namespace)
    if args.json:
        print(json.dumps([asdict(s) for s in states], indent=2))
    else:
        _print_status(args.release, args.namespace, states)
    return 0 if all(s.ready for s in states) else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `ucadi site status`."""
    site = subparsers.add_parser("site", help="a site's deployment on Kubernetes")
    actions = site.add_subparsers(dest="site_command", metavar="ACTION", required=True)
    status = actions.add_parser(
        "status", help="pods, readiness, restarts and last round of a site release",
        description="Show a ucadi-site Helm release's pods; exit 0 when all are ready, 1 if not.")
    status.add_argument("--release", required=True, help="Helm release name of the site")
    status.add_argument("--namespace", required=True, help="namespace of the release")
    status.add_argument("--context", help="kubeconfig context (default: the current one)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=_status_command)
