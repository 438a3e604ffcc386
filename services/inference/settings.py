"""Settings of `ucadi serve inference`: DEFAULTS (the config file's schema), then the config
file, then command-line flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from services.inference.batching import BatchingConfig
from services.inference.callers import CallerPolicy, TokenVerifier
from services.inference.upload import UploadLimits
from ucadi.errors import UcadiError
from ucadi.ops.config import load_config

DEFAULT_MODEL_NAME = "ucadi-covid-ct"
DEFAULT_REQUEST_TIMEOUT_S = 120.0
DEFAULT_MAX_REQUEST_ROWS = 64


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the inference service needs to start."""

    model_dir: Path
    device: str = "cpu"
    model_name: str = DEFAULT_MODEL_NAME
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    limits: UploadLimits = field(default_factory=UploadLimits)
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    poll_interval_s: float = 1.0
    # Most rows (samplings) one ModelInfer request may carry; a request above max_batch runs
    # as a batch of its own.
    max_request_rows: int = DEFAULT_MAX_REQUEST_ROWS
    # Who may call the gRPC ports (federation CA, a site-local CA, or bearer tokens).
    callers: CallerPolicy = field(default_factory=CallerPolicy)


# Every setting of `ucadi serve inference --config FILE`; UCADI_<SECTION>__<KEY> overrides.
DEFAULTS: dict[str, Any] = {
    "server": {
        "address": "127.0.0.1:8001",
        "metrics_address": "127.0.0.1:9103",
        # Plaintext gRPC health-only port for Kubernetes probes ("" = none).
        "health_address": "",
        # ca.crt, tls.crt, tls.key; "" serves plaintext (local debugging only, `--insecure`).
        "tls_dir": "",
        # Server-side deadline of one request, in seconds.
        "request_timeout_s": DEFAULT_REQUEST_TIMEOUT_S,
    },
    "model": {
        # The folder the site's trainer publishes (checkpoint folder, or versions/<n>/ + current).
        "dir": "var/site/models",
        # auto | cpu | cuda (auto: CUDA when available).
        "device": "auto",
        # Model name in the Open Inference Protocol.
        "name": DEFAULT_MODEL_NAME,
    },
    "batching": {
        # Most samplings (model input rows) per forward pass.
        "max_batch": BatchingConfig.max_batch,
        # Longest wait for a batch to fill, in milliseconds.
        "max_delay_ms": BatchingConfig.max_delay_s * 1e3,
        # Most waiting requests; more get RESOURCE_EXHAUSTED.
        "max_queue": BatchingConfig.max_queue,
    },
    "limits": {
        # Largest study upload, in MiB.
        "max_upload_mb": UploadLimits.max_upload_bytes >> 20,
        # Most slices in one study.
        "max_slices": UploadLimits.max_slices,
        # Studies uploaded or preprocessed at once; more get RESOURCE_EXHAUSTED.
        "max_concurrent_studies": UploadLimits.max_concurrent_studies,
    },
    # Callers of the gRPC ports besides the federation (docs/hospital-access.md).
    "clients": {
        # mutual-tls: client certificates from the CAs below; token: server-only TLS and an
        # OIDC bearer token (JWT) in the `authorization` metadata.
        "mode": "mutual-tls",
        # Accept certificates from the federation CA (server.tls_dir/ca.crt).
        "federation_ca": True,
        # PEM bundle of a site-local CA whose certificates may call too ("" = none).
        "site_ca_file": "",
        # Roles (certificate OU or the token's role claim) allowed to call; [] = any verified.
        "allowed_roles": [],
        # Bearer tokens (mode token, and the web page's bearer mode): the OIDC issuer, the
        # audience the token must name, and the issuer's JWKS file (public keys).
        "oidc_issuer": "",
        "oidc_audience": "",
        "oidc_jwks_file": "",
        # Claims naming the caller and its role(s).
        "oidc_name_claim": "preferred_username",
        "oidc_role_claim": "roles",
    },
    # The radiologist's web page (services/inference/web); off unless an address is set.
    "web": {
        # HOST:PORT of the HTTPS page ("" = no page).
        "address": "",
        # certificate | bearer | header | none (none only on a loopback address).
        "auth": "certificate",
        # PEM certificate and key the page presents ("" = server.tls_dir's tls.crt/tls.key).
        "tls_cert_file": "",
        "tls_key_file": "",
        # auth certificate: PEM bundle of the site-local CA of the radiologists' certificates.
        "client_ca_file": "",
        # auth header: the proxy's user and role headers (oauth2-proxy: X-Forwarded-User,
        # X-Forwarded-Groups) and the proxy addresses they are believed from.
        "user_header": "X-Forwarded-User",
        "role_header": "X-Forwarded-Groups",
        "trusted_proxies": ["127.0.0.1/32", "::1/128"],
        # SQLite file of the page's history (study UID, result, model version; no pixels).
        "history_db": "var/site/web-history.sqlite",
        # Days a history entry is kept; older ones are deleted (0 = keep no history).
        "history_retention_days": 30,
    },
}

# flag -> (section, key) of DEFAULTS it overrides
FLAG_SETTINGS = {
    "model": ("model", "dir"), "device": ("model", "device"), "model_name": ("model", "name"),
    "address": ("server", "address"), "metrics_address": ("server", "metrics_address"),
    "tls_dir": ("server", "tls_dir"), "request_timeout_s": ("server", "request_timeout_s"),
    "max_batch": ("batching", "max_batch"), "max_delay_ms": ("batching", "max_delay_ms"),
    "max_queue": ("batching", "max_queue"), "max_upload_mb": ("limits", "max_upload_mb"),
    "max_slices": ("limits", "max_slices"),
    "max_concurrent_studies": ("limits", "max_concurrent_studies"),
    "web_address": ("web", "address"), "web_auth": ("web", "auth"),
    "site_ca_file": ("clients", "site_ca_file"), "clients_mode": ("clients", "mode"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ucadi serve inference` (each overrides the config file; see DEFAULTS)."""
    parser.add_argument("--config", type=Path, help="YAML config file (settings: DEFAULTS)")
    parser.add_argument("--model", type=Path, metavar="DIR",
                        help="model directory the site trainer publishes (checkpoint folder, "
                             "or versions/<n>/ + current)")
    parser.add_argument("--address",
                        help="HOST:PORT to listen on (port 0: OS-assigned, see --port-file)")
    security = parser.add_mutually_exclusive_group()
    security.add_argument("--tls-dir", type=Path, metavar="DIR",
                          help="ca.crt, tls.crt, tls.key: mutual TLS (clients need a "
                               "certificate from the federation CA)")
    security.add_argument("--insecure", action="store_true",
                          help="plaintext gRPC, only for local debugging")
    parser.add_argument("--metrics-address",
                        help="HOST:PORT of the Prometheus /metrics endpoint ('' to disable)")
    parser.add_argument("--port-file", type=Path, metavar="FILE",
                        help="write 'grpc_port metrics_port' here once listening")
    parser.add_argument("--model-name", help="model name in the Open Inference Protocol")
    parser.add_argument("--max-batch", type=int,
                        help="most samplings (model input rows) per forward pass")
    parser.add_argument("--max-delay-ms", type=float,
                        help="longest wait for a batch to fill, in milliseconds")
    parser.add_argument("--max-queue", type=int,
                        help="most waiting requests; more get RESOURCE_EXHAUSTED")
    parser.add_argument("--max-upload-mb", type=int, help="largest study upload, in MiB")
    parser.add_argument("--max-slices", type=int, help="most slices in one study")
    parser.add_argument("--max-concurrent-studies", type=int,
                        help="studies uploaded or preprocessed at once; more get "
                             "RESOURCE_EXHAUSTED")
    parser.add_argument("--request-timeout-s", type=float,
                        help="server-side deadline of one request, in seconds")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"],
                        help="where the model runs (auto: CUDA when available)")
    parser.add_argument("--web-address", metavar="HOST:PORT",
                        help="serve the radiologist's HTTPS page here (off by default)")
    parser.add_argument("--web-auth", choices=["certificate", "bearer", "header", "none"],
                        help="how the page knows its users (none: loopback addresses only)")
    parser.add_argument("--site-ca-file", type=Path, metavar="PEM",
                        help="also accept gRPC clients holding a certificate from this "
                             "site-local CA bundle")
    parser.add_argument("--clients-mode", choices=["mutual-tls", "token"],
                        help="gRPC callers: client certificates, or server-only TLS and an "
                             "OIDC bearer token")


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """DEFAULTS, then the config file, then the flags given on the command line."""
    settings = load_config(DEFAULTS, getattr(args, "config", None))
    for flag, (section, key) in FLAG_SETTINGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            settings[section][key] = str(value) if isinstance(value, Path) else value
    if getattr(args, "insecure", False):
        settings["server"]["tls_dir"] = ""
    elif not settings["server"]["tls_dir"]:
        raise UcadiError("set --tls-dir (or server.tls_dir in the config file) for mutual TLS, "
                         "or --insecure for plaintext local debugging")
    return settings


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    """ServiceConfig from the config file and `ucadi serve inference` flags."""
    settings = settings_from_args(args)
    model, batching, limits = settings["model"], settings["batching"], settings["limits"]
    device = model["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise UcadiError("--device cuda was given but no CUDA device is available; use "
                         "--device cpu or auto")
    return ServiceConfig(
        model_dir=Path(model["dir"]), device=device, model_name=model["name"],
        batching=BatchingConfig(max_batch=int(batching["max_batch"]),
                                max_delay_s=float(batching["max_delay_ms"]) / 1e3,
                                max_queue=int(batching["max_queue"])),
        limits=UploadLimits(max_upload_bytes=int(limits["max_upload_mb"]) << 20,
                            max_slices=int(limits["max_slices"]),
                            max_concurrent_studies=int(limits["max_concurrent_studies"])),
        request_timeout_s=float(settings["server"]["request_timeout_s"]),
        callers=caller_policy(settings))


def caller_policy(settings: dict[str, Any]) -> CallerPolicy:
    """The gRPC caller policy of the `clients` settings."""
    clients = settings["clients"]
    site_ca = clients["site_ca_file"]
    return CallerPolicy(
        mode=clients["mode"], federation_ca=bool(clients["federation_ca"]),
        site_ca_file=Path(site_ca) if site_ca else None,
        allowed_roles=tuple(str(role) for role in clients["allowed_roles"]),
        tokens=token_verifier(settings))


def token_verifier(settings: dict[str, Any]) -> TokenVerifier | None:
    """The OIDC bearer-token verifier of the `clients` settings, or None when unset."""
    clients = settings["clients"]
    if not clients["oidc_jwks_file"]:
        return None
    return TokenVerifier.from_jwks_file(
        Path(clients["oidc_jwks_file"]), issuer=clients["oidc_issuer"],
        audience=clients["oidc_audience"], name_claim=clients["oidc_name_claim"],
        role_claim=clients["oidc_role_claim"])
