"""A whole federation on one machine: PKI, crypto service, key custodian, aggregator and one
trainer per site, each a real process on 127.0.0.1 with mutual TLS and OS-assigned ports.

Used by `ucadi demo` and by the end-to-end tests, which also kill and restart its processes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ucadi.demo.processes import ServiceProcess, start_service
from ucadi.errors import UcadiError
from ucadi.lwe import FixedPointCodec, generate_secret_key
from ucadi.lwe.custodian import CustodianKey, ensure_custodian_key
from ucadi.lwe.keys import SecretKey
from ucadi.lwe.keywrap import PUBLIC_KEY_FILE, fingerprint, load_public_key, wrap_secret
from ucadi.lwe.masking import unmasker
from ucadi.lwe.pins import PINS_FILE, SitePins
from ucadi.lwe.stream import decrypt_fedavg_file
from ucadi.ops.pki import create_ca, issue_certificate
from ucadi.ops.serving import grpc_options
from ucadi.ops.tls import TLSFiles, secure_channel
from ucadi.v1 import federation_pb2, federation_pb2_grpc
from ucadi.wire.crypto_client import KeyClient

CUSTODIAN = "custodian"
OPERATOR = "operator"


@dataclass
class FederationPlan:
    """What to run: sites, rounds, model and timing."""

    root: Path
    manifest: Path
    sites: list[str]
    rounds: int = 3
    local_epochs: int = 1
    min_sites: int = 2
    arch: str = "densenet3d"
    model_preset: str = "cpu-small"
    task: str = "binary"
    init_seed: int = 0
    recipe: dict[str, Any] = field(default_factory=dict)
    # federation.optimizer (ucadi.learn.server_opt.FederatedOptimization fields); {} = FedAvg.
    optimizer: dict[str, Any] = field(default_factory=dict)
    # Seed of every site's sampling, shuffling and DropBlock masks.
    site_seed: int = 0
    parameter_set: str = ""
    round_timeout_s: float = 900.0
    liveness_timeout_s: float = 60.0
    trainer_threads: int = 1
    federation_id: str = "ucadi-demo"
    # False only to measure what encryption costs (bench): the aggregator then reads updates.
    encryption: bool = True
    # True: the single-node deployment, where the aggregator adds ciphertexts in-process and
    # the crypto service only keeps the wrapped keys (bench: the cost of the separate service).
    sum_in_aggregator: bool = False
    # False: sites upload and download through the aggregator, which passes ciphertexts to and
    # from the sum service (server.site_contributions; bench: what the direct exchange saves).
    site_contributions: bool = True
    # True: the aggregator also keeps a copy of each global version the sum service holds.
    copy_global_versions: bool = False
    # Sum-service replicas, each summing a block range (server.crypto_address lists them):
    # the crypto service is the first; the others run the same service with no keys (bench).
    sum_replicas: int = 1
    # Pairwise masks (federation.pairwise_masks, the product's default; docs/design/
    # multiparty.md). False pins the shared-key mode: for harnesses whose sites upload by hand
    # and do not run the masking phases (the probes of tests, the load generator, the chaos
    # fuzzer), where what is tested is not the masks.
    pairwise_masks: bool = True


class LocalFederation:
    """Starts, watches and stops the processes of a local federation."""

    def __init__(self, plan: FederationPlan) -> None:
        self.plan = plan
        self.root = Path(plan.root)
        self.pki = self.root / "pki"
        self.logs = self.root / "logs"
        self.processes: dict[str, ServiceProcess] = {}
        self.secret: SecretKey | None = None

    # -- provisioning ------------------------------------------------------------------
    def provision(self) -> None:
        """CA and certificates for the services, the custodian, the operator and each site."""
        if (self.pki / "ca" / "ca.crt").exists():
            return
        create_ca(self.pki / "ca", "ucadi-demo-ca")
        for name, role in (("aggregator", "service"), ("crypto", "service"),
                           (CUSTODIAN, "custodian"), (OPERATOR, "operator"),
                           *((site, "site") for site in self.plan.sites)):
            issue_certificate(self.pki / "ca", self.pki / name, name, role)

    def tls(self, name: str) -> TLSFiles:
        """The TLS files of one identity."""
        return TLSFiles.from_dir(self.pki / name)

    def create_key(self) -> SecretKey:
        """The custodian's LWE secret (kept in the custodian's folder only)."""
        path = self.root / "custodian" / "lwe-secret.key"
        if path.exists():
            self.secret = SecretKey.load(path)
        else:
            from ucadi.lwe.params import DEFAULT_PARAMETER_SET

            self.secret = generate_secret_key(self.plan.parameter_set or DEFAULT_PARAMETER_SET)
            self.secret.save(path)
        ensure_custodian_key(self.root / "custodian")
        return self.secret

    @property
    def custodian(self) -> CustodianKey:
        """The custodian's signing key (made by create_key); sites are configured with its
        public half."""
        return CustodianKey.load(self.root / "custodian")

    # -- processes -----------------------------------------------------------------------
    def start_crypto(self) -> ServiceProcess:
        """The crypto service (key service + sum service) on an OS-assigned port."""
        return self.start_crypto_on(0)

    def start_crypto_on(self, port: int) -> ServiceProcess:
        """The crypto service on `port` (a restart keeps its address and its state folder)."""
        process = start_service("crypto", "crypto", [
            "--state-dir", str(self.root / "crypto"), "--address", f"127.0.0.1:{port}",
            "--tls-dir", str(self.pki / "crypto"), "--metrics-address", "127.0.0.1:0"],
            self.logs)
        self.processes["crypto"] = process
        return process

    def start_sum_replicas(self) -> list[ServiceProcess]:
        """The plan's further sum-service replicas (`crypto-2`, ...), each with its own state
        folder, on OS-assigned ports; start them before the aggregator."""
        for index in range(2, self.plan.sum_replicas + 1):
            name = f"crypto-{index}"
            self.processes[name] = start_service(name, "crypto", [
                "--state-dir", str(self.root / name), "--address", "127.0.0.1:0",
                "--tls-dir", str(self.pki / "crypto"), "--metrics-address", "127.0.0.1:0"],
                self.logs)
        return [self.processes[f"crypto-{i}"] for i in range(2, self.plan.sum_replicas + 1)]

    def sum_targets(self) -> str:
        """server.crypto_address: the crypto service, then the further sum replicas."""
        names = ["crypto", *(f"crypto-{i}" for i in range(2, self.plan.sum_replicas + 1))]
        return ",".join(self.processes[name].target for name in names)

    def aggregator_config(self) -> Path:
        """Write the aggregator's config file (federation settings)."""
        assert self.secret is not None, "create_key() first"
        plan = self.plan
        config = {
            "federation": {"id": plan.federation_id, "min_sites": plan.min_sites,
                           "total_rounds": plan.rounds, "local_epochs": plan.local_epochs,
                           "round_timeout_s": plan.round_timeout_s,
                           "liveness_timeout_s": plan.liveness_timeout_s,
                           "pairwise_masks": plan.pairwise_masks,
                           "optimizer": plan.optimizer},
            "model": {"arch": plan.arch, "preset": plan.model_preset, "task": plan.task,
                      "init_seed": plan.init_seed, "recipe": plan.recipe},
            "encryption": {"enabled": plan.encryption, "parameter_set": self.secret.params.name,
                           "key_id": self.secret.key_id_hex},
        }
        if plan.sum_in_aggregator:
            config["server"] = {"crypto_address": "",
                                "key_address": self.processes["crypto"].target}
        else:
            config["server"] = {"site_contributions": plan.site_contributions,
                                "copy_global_versions": plan.copy_global_versions}
        path = self.root / "aggregator.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start_aggregator(self) -> ServiceProcess:
        """The aggregator on an OS-assigned port."""
        return self.start_aggregator_on(0)

    def start_aggregator_on(self, port: int) -> ServiceProcess:
        """The aggregator on `port` (a restart keeps its address and its state folder)."""
        sums = [] if self.plan.sum_in_aggregator else ["--crypto", self.sum_targets()]
        process = start_service("aggregator", "aggregator", [
            "--config", str(self.aggregator_config()),
            "--state-dir", str(self.root / "aggregator"), "--address", f"127.0.0.1:{port}",
            "--metrics-address", "127.0.0.1:0", "--tls-dir", str(self.pki / "aggregator"),
            *sums], self.logs)
        self.processes["aggregator"] = process
        return process

    def start_trainer(self, site: str) -> ServiceProcess:
        """One site's trainer agent."""
        site_dir = self.root / "sites" / site
        process = start_service(f"trainer-{site}", "trainer", [
            "--manifest", str(self.plan.manifest), "--model-dir", str(site_dir / "models"),
            "--work-dir", str(site_dir / "work"), "--device", "cpu",
            "--threads", str(self.plan.trainer_threads), "--seed", str(self.plan.site_seed),
            "--tls-dir", str(self.pki / site), "--custodian-key", self.custodian.public_hex(),
            "--aggregator", self.processes["aggregator"].target,
            "--crypto", self.processes["crypto"].target, "--address", "127.0.0.1:0",
            "--metrics-address", "127.0.0.1:0"], self.logs)
        self.processes[f"trainer-{site}"] = process
        return process

    def stop(self) -> None:
        """Stop every process (trainers first)."""
        for name in sorted(self.processes, key=lambda n: not n.startswith("trainer")):
            self.processes[name].stop()

    # -- custodian and operator ---------------------------------------------------------------
    def approve_sites(self, sites: list[str], timeout: float = 300.0) -> None:
        """Custodian: wrap the LWE secret for each site once it registered its public key."""
        assert self.secret is not None, "create_key() first"
        channel = secure_channel(self.processes["crypto"].target, self.tls(CUSTODIAN),
                                 options=tuple(grpc_options()))
        keys = KeyClient(channel)
        pending = set(sites)
        deadline = time.monotonic() + timeout
        pins = SitePins(self.root / "custodian" / PINS_FILE)
        custodian = self.custodian
        try:
            while pending:
                registered = keys.site_keys()
                ready = sorted(pending & set(registered))
                for site in ready:  # as `ucadi keys wrap` does: only for pinned keys
                    if site not in pins.pins:
                        self._pin_from_site_folder(pins, site)
                    pins.check(site, fingerprint(registered[site]))
                if ready:
                    keys.put_wrapped_keys(self.secret.key_id_hex, self.secret.params.name, {
                        site: wrap_secret(self.secret, site, load_public_key(registered[site]),
                                          custodian)
                        for site in ready})
                    pending -= set(ready)
                if pending and time.monotonic() > deadline:
                    raise UcadiError(f"sites {sorted(pending)} did not register a key within "
                                     f"{timeout:.0f} s; see {self.logs}")
                if pending:
                    time.sleep(0.3)
        finally:
            channel.close()

    def pin_site(self, site: str, public_key_pem: bytes) -> None:
        """Custodian: pin a site's key, as heard from the site out of band."""
        SitePins(self.root / "custodian" / PINS_FILE).pin(site, fingerprint(public_key_pem))

    def _pin_from_site_folder(self, pins: SitePins, site: str) -> None:
        """On one machine the out-of-band channel is the site's own folder: its trainer's
        public key file (services/trainer/keys.py)."""
        public = self.root / "sites" / site / "work" / "keys" / PUBLIC_KEY_FILE
        if public.exists():
            pins.pin(site, fingerprint(public.read_bytes()))

    def stored_global(self, version: int) -> Path:
        """The file central storage holds for global version `version`: the aggregator's copy,
        or else the sum service's sealed sum of round `version` (where sites fetch it)."""
        copy = self.root / "aggregator" / "global" / f"v{version:05d}.lwe"
        if copy.exists():
            return copy
        sealed = sorted((self.root / "crypto" / "sums" / "rounds" / self.plan.federation_id
                         / str(version)).glob("sum-*.ct"))
        if not sealed:
            raise UcadiError(f"neither the aggregator nor the sum service stores global version "
                             f"{version} under {self.root}")
        return sealed[-1]

    def decrypt_global(self, version: int) -> tuple[np.ndarray, int]:
        """(FedAvg vector, total weight) of stored global version `version`, decrypted as a site
        decrypts it: under the federation's secret, less the masks a masked round leaves in its
        sum (the terms any site fetches with GetUnmasking; none in the shared-key mode)."""
        assert self.secret is not None, "create_key() first"
        params = self.secret.params
        unmask = None
        if self.plan.pairwise_masks and self.plan.encryption:
            channel = secure_channel(self.processes["aggregator"].target,
                                     self.tls(self.plan.sites[0]))
            try:
                reply = federation_pb2_grpc.FederationServiceStub(channel).GetUnmasking(
                    federation_pb2.GetUnmaskingRequest(round=version), timeout=30)
            finally:
                channel.close()
            unmask = unmasker([(bytes(t.seed), int(t.sign)) for t in reply.terms], params)
        return decrypt_fedavg_file(self.secret, self.stored_global(version),
                                   FixedPointCodec.for_parameters(params), unmask=unmask)

    def status(self, request: Any = None) -> Any:
        """The aggregator's FederationStatus, as the operator sees it (or as `request`, a
        GetStatusRequest, asks)."""
        channel = secure_channel(self.processes["aggregator"].target, self.tls(OPERATOR))
        try:
            return federation_pb2_grpc.FederationServiceStub(channel).GetStatus(
                request or federation_pb2.GetStatusRequest(), timeout=30)
        finally:
            channel.close()

    def wait_for(self, condition: Callable[[Any], bool], timeout: float,
                 on_status: Callable[[Any], None] | None = None, poll_s: float = 1.0) -> Any:
        """Poll the federation status until `condition(status)`; fail fast if a process died."""
        deadline = time.monotonic() + timeout
        while True:
            for name, process in self.processes.items():
                if not process.alive() and process.process.returncode not in (0, None):
                    raise UcadiError(f"{name} exited with code {process.process.returncode}; "
                                     f"its log ends:\n{process.tail()}")
            try:
                status = self.status()
            except Exception:  # the aggregator may be restarting
                status = None
            if status is not None:
                if on_status is not None:
                    on_status(status)
                if condition(status):
                    return status
            if time.monotonic() > deadline:
                raise UcadiError(f"federation did not reach the expected state within "
                                 f"{timeout:.0f} s; logs in {self.logs}")
            time.sleep(poll_s)

    def run(self, timeout: float, on_status: Callable[[Any], None] | None = None,
            on_started: Callable[[LocalFederation], None] | None = None) -> dict[str, Any]:
        """Provision, start every process, approve the sites, run every planned round until
        each site published the last version, stop everything; the rounds' summary."""
        self.provision()
        self.create_key()
        try:
            self.start_crypto()
            self.start_aggregator()
            for site in self.plan.sites:
                self.start_trainer(site)
            self.approve_sites(self.plan.sites)
            if on_started is not None:
                on_started(self)
            rounds = self.plan.rounds
            self.wait_for(
                lambda s: s.current.state == federation_pb2.ROUND_STATE_COMPLETED
                and sum(1 for r in s.rounds if r.sealed_unix) >= rounds and all(
                    s2.metrics.version >= rounds for s2 in s.sites if s2.HasField("metrics")),
                timeout=timeout, on_status=on_status)
            return self.summary()
        finally:
            self.stop()

    def global_state(self, site: str) -> Path:
        """The file where `site` keeps the global model and server-optimiser state."""
        return self.root / "sites" / site / "work" / "global-state.safetensors"

    def summary(self) -> dict[str, Any]:
        """Plain-data summary of rounds for reports."""
        status = self.status()
        return {"federation": status.federation_id, "rounds": [
            {"round": r.round, "sites": list(r.uploaded_sites), "bytes_in": r.bytes_in,
             "global_bytes": r.global_bytes,
             "seconds": (r.sealed_unix - r.opened_unix) if r.sealed_unix else None}
            for r in status.rounds]}


def to_json(data: Any) -> str:
    """Compact JSON for logs."""
    return json.dumps(data, sort_keys=True)
