"""The site trainer process: status service + the federation agent loop."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import grpc
import torch
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.trainer.agent import AgentSettings, AgentStatus, SiteAgent
from services.trainer.cipher import SiteCipher
from services.trainer.client import FederationClient
from services.trainer.keys import obtain_secret
from ucadi.errors import UcadiError
from ucadi.lwe.custodian import custodian_public_key
from ucadi.lwe.errors import KeyWrapError
from ucadi.ops.config import DEFAULT_SOURCE, ConfigError, load_config
from ucadi.ops.logs import name_service
from ucadi.ops.pki_cli import ENDPOINTS_FILE
from ucadi.ops.serving import grpc_errors, serve, set_on_stop_signal
from ucadi.ops.tls import PermissionDeniedError, TLSFiles, identity_from_pem, peer_identity
from ucadi.ops.tracing import setup_tracing
from ucadi.threads import set_compute_threads
from ucadi.v1 import trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = "ucadi.v1.TrainerService"

# Every setting of `ucadi serve trainer --config FILE`; UCADI_<SECTION>__<KEY> overrides.
DEFAULTS: dict[str, Any] = {
    "site": {
        # Synthetic-cohort style manifest.csv listing this site's studies.
        "manifest": "data/manifest.csv",
        # Where decrypted global versions are published for the site's inference service.
        "model_dir": "var/site/models",
        # Keys, transfers in progress.
        "work_dir": "var/site/work",
        # cpu, cuda, cuda:0 ... ("auto" picks CUDA when present).
        "device": "auto",
        # torch intra-op and numpy BLAS threads (ucadi.threads); 0 = their defaults.
        "threads": 0,
        "seed": 0,
        # Share aggregate validation metrics (AUC, sensitivity, specificity) with the aggregator.
        "share_metrics": True,
        # Refuse a global sum of fewer distinct sites than this, whatever the federation
        # announces as its min_sites (a sum of one other site's update exposes that update).
        "min_sum_sites": 2,
        # The key custodian's Ed25519 public key (64 hex digits, from the custodian out of
        # band: `ucadi keys create` prints it). Required: the site accepts only a wrapped LWE
        # key signed with it, so the central side cannot hand the site a key of its own.
        "custodian_key": "",
        # CycleGAN folder (`ucadi augment cyclegan train`, trained on this site's own studies):
        # contrast-enhanced training studies are translated to non-contrast at random; "" = off.
        "augment_contrast": "",
        # Chance that a contrast study's sampling is translated in an epoch.
        "augment_contrast_probability": 0.5,
    },
    "server": {
        "address": "127.0.0.1:7445",
        "metrics_address": "127.0.0.1:9102",
        # Plaintext gRPC health-only port for Kubernetes probes ("" = none).
        "health_address": "",
        "tls_dir": "",
        "aggregator_address": "127.0.0.1:7443",
        # The crypto service: this site's wrapped key, and its updates' ciphertexts when the
        # aggregator asks sites to send them there (JoinResponse.contribute_to_sum).
        "crypto_address": "127.0.0.1:7444",
        # Seconds to keep retrying an unreachable aggregator before giving up.
        "retry_budget_s": 600.0,
        # Seconds to wait for the key custodian to approve this site.
        "key_wait_s": 3600.0,
    },
}


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    """Status and control of the site agent."""

    def __init__(self, site: str, status: AgentStatus, device: str) -> None:
        self.site = site
        self.status = status
        self.device = device

    def _require_own_site_or_operator(self, context: grpc.ServicerContext) -> None:
        """The site's own certificate or an operator: another site may neither read this
        site's status nor make it leave."""
        caller = peer_identity(context)
        caller.require_role("site", "operator")
        if caller.role == "site" and caller.name != self.site:
            raise PermissionDeniedError(f"site {caller.name!r} may not call the trainer of site "
                                        f"{self.site!r}; use that site's own certificate")

    @grpc_errors
    def GetStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._require_own_site_or_operator(context)
        s = self.status
        return trainer_pb2.TrainerStatus(
            site=self.site, phase=s.phase, round=s.round, published_version=s.published_version,
            train_cases=s.train_cases, val_auc=s.val_auc, val_sensitivity=s.val_sensitivity,
            val_specificity=s.val_specificity, last_error=s.last_error, device=self.device)

    @grpc_errors
    def RequestLeave(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._require_own_site_or_operator(context)
        self.status.leave_requested.set()
        return trainer_pb2.RequestLeaveResponse()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ucadi serve trainer` (each overrides the config file)."""
    parser.add_argument("--config", type=Path, help="YAML config file")
    parser.add_argument("--manifest", help="manifest.csv of the site's CT studies")
    parser.add_argument("--model-dir", help="folder where global versions are published")
    parser.add_argument("--work-dir", help="folder for keys and transfers")
    parser.add_argument("--device", help="cpu | cuda | auto")
    parser.add_argument("--threads", type=int,
                        help="torch and numpy BLAS threads (0 = their defaults)")
    parser.add_argument("--seed", type=int, help="seed of the site's sampling, shuffling and "
                                                 "DropBlock masks (default 0)")
    parser.add_argument("--tls-dir", help="the site's startup kit (ca.crt, tls.crt, tls.key)")
    parser.add_argument("--custodian-key", help="the key custodian's Ed25519 public key "
                                                "(64 hex digits)")
    parser.add_argument("--aggregator", help="aggregator HOST:PORT")
    parser.add_argument("--crypto", help="crypto service HOST:PORT")
    parser.add_argument("--address", help="status service HOST:PORT")
    parser.add_argument("--metrics-address", help="Prometheus /metrics HOST:PORT")
    parser.add_argument("--port-file", type=Path, help="write the bound ports here once serving")


# flag -> (section, key) of DEFAULTS it overrides
FLAG_SETTINGS = {
    "manifest": ("site", "manifest"), "model_dir": ("site", "model_dir"),
    "work_dir": ("site", "work_dir"), "device": ("site", "device"),
    "threads": ("site", "threads"), "seed": ("site", "seed"), "tls_dir": ("server", "tls_dir"),
    "custodian_key": ("site", "custodian_key"),
    "aggregator": ("server", "aggregator_address"), "crypto": ("server", "crypto_address"),
    "address": ("server", "address"), "metrics_address": ("server", "metrics_address"),
}


def _apply_flags(config: dict[str, Any], args: argparse.Namespace,
                 sources: dict[str, str]) -> None:
    for flag, (section, key) in FLAG_SETTINGS.items():
        if getattr(args, flag, None) is not None:
            config[section][key] = getattr(args, flag)
            sources[f"{section}.{key}"] = f"flag --{flag.replace('_', '-')}"


def complete_config(config: dict[str, Any], sources: dict[str, str]) -> None:
    """Take the aggregator and crypto addresses from the startup kit's endpoints.yaml
    (`ucadi pki kit`) where no config file, environment variable or flag set them."""
    tls_dir = config["server"]["tls_dir"]
    kit = Path(tls_dir) / ENDPOINTS_FILE
    if not tls_dir or not kit.is_file():
        return
    try:
        endpoints = yaml.safe_load(kit.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UcadiError(f"{kit} is not YAML ({exc}); `ucadi pki kit` writes it") from exc
    for name, key in (("aggregator", "aggregator_address"), ("crypto", "crypto_address")):
        unset = sources.get(f"server.{key}", DEFAULT_SOURCE) == DEFAULT_SOURCE
        if unset and endpoints.get(name):
            config["server"][key] = str(endpoints[name])
            sources[f"server.{key}"] = f"in {kit}"


def _custodian_key(value: str, sources: dict[str, str]) -> Ed25519PublicKey:
    """site.custodian_key, parsed; ConfigError naming the setting when unset or malformed."""
    if not value.strip():
        raise ConfigError("setting site.custodian_key is required: the key custodian's Ed25519 "
                          "public key, 64 hex digits (`ucadi keys create` prints it; also in the "
                          "custodian's custodian_ed25519.pub); set it in the config, "
                          "UCADI_SITE__CUSTODIAN_KEY or --custodian-key")
    try:
        return custodian_public_key(value)
    except KeyWrapError as exc:
        where = sources.get("site.custodian_key", DEFAULT_SOURCE)
        raise ConfigError(f"setting site.custodian_key ({where}): {exc}") from None
def contrast_augmentation(site_cfg: dict[str, Any]) -> Any:
    """The training augmentation site.augment_contrast names (None when ""); UcadiError naming
    the setting when its folder or probability is unusable."""
    from ucadi.augment import ContrastAugmentation, load_translator

    folder = str(site_cfg.get("augment_contrast") or "")
    raw = site_cfg.get("augment_contrast_probability", 0.5)
    try:
        probability = float(raw)
    except (TypeError, ValueError):
        probability = float("nan")
    if not 0.0 <= probability <= 1.0:
        raise UcadiError(f"site.augment_contrast_probability must be a number in [0, 1]; got "
                         f"{raw!r}")
    if not folder:
        return None
    try:
        translator = load_translator(Path(folder))
    except UcadiError as exc:
        raise UcadiError(f"site.augment_contrast: {exc}") from None
    return ContrastAugmentation(translator, probability, folder)


def resolve_device(name: str) -> str:
    """'auto' -> cuda when available, else cpu."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def run_from_args(args: argparse.Namespace) -> int:
    """Run the site agent until the federation completes (or SIGTERM)."""
    sources: dict[str, str] = {}
    config = load_config(DEFAULTS, args.config, sources=sources)
    _apply_flags(config, args, sources)
    complete_config(config, sources)
    site_cfg, server_cfg = config["site"], config["server"]
    custodian = _custodian_key(site_cfg["custodian_key"], sources)
    augment = contrast_augmentation(site_cfg)
    tls = TLSFiles.from_dir(Path(server_cfg["tls_dir"]))
    site = identity_from_pem(tls.cert.read_bytes()).name
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s trainer[{site}] %(message)s")
    name_service(f"trainer[{site}]")  # under `ucadi serve`, whose handler basicConfig keeps
    if int(site_cfg["threads"]) > 0:
        set_compute_threads(int(site_cfg["threads"]))
    setup_tracing(f"ucadi-trainer-{site}")
    device = resolve_device(site_cfg["device"])
    status = AgentStatus()
    servicer = TrainerServicer(site, status, device)
    running = serve(lambda s: trainer_pb2_grpc.add_TrainerServiceServicer_to_server(servicer, s),
                    service_names=[SERVICE_NAME], address=server_cfg["address"], tls=tls,
                    metrics_address=server_cfg["metrics_address"] or None,
                    port_file=args.port_file,
                    health_address=server_cfg["health_address"] or None)
    set_on_stop_signal(status.leave_requested)
    work_dir = Path(site_cfg["work_dir"])
    federation = FederationClient(server_cfg["aggregator_address"], tls,
                                  retry_budget_s=float(server_cfg["retry_budget_s"]),
                                  cancelled=status.leave_requested,
                                  sum_target=server_cfg["crypto_address"])
    try:
        status.phase = "waiting_for_key"
        secret = obtain_secret(server_cfg["crypto_address"], tls, work_dir,
                               wait_s=float(server_cfg["key_wait_s"]), custodian=custodian,
                               cancelled=status.leave_requested)
        if secret is None:
            status.phase = "left"
            log.info("asked to leave before the key custodian approved this site; stopping")
            return 0
        settings = AgentSettings(site=site, manifest=Path(site_cfg["manifest"]),
                                 model_dir=Path(site_cfg["model_dir"]), work_dir=work_dir,
                                 device=device, seed=int(site_cfg["seed"]),
                                 share_metrics=bool(site_cfg["share_metrics"]),
                                 min_sum_sites=int(site_cfg["min_sum_sites"]),
                                 custodian=custodian,
                                 contrast_augment=augment)
        SiteAgent(settings, federation, SiteCipher(secret, work_dir / "lwe"), status).run()
        if status.phase == "completed":
            # Stay up (status and metrics stay readable, no restart loop under Kubernetes)
            # until the operator stops the site agent.
            log.info("federation completed; serving status until stopped")
            status.leave_requested.wait()
    except Exception as exc:
        status.phase, status.last_error = "error", str(exc)
        log.exception("site agent stopped")
        return 1
    finally:
        federation.close()
        running.stop(1.0)
    return 0


