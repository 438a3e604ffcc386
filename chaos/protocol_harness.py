"""The fuzzer's view of the running federation: who calls with which certificate, which
process serves which service, who may call what, and the table rows being filled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chaos.messages import Rpc, call
from chaos.outcome import Check
from ucadi.demo.federation import LocalFederation
from ucadi.demo.processes import ServiceProcess
from ucadi.ops.serving import grpc_options
from ucadi.ops.tls import TLSFiles, channel_credentials

PART = "protocol"
CALL_TIMEOUT_S = 10.0
# Statuses that mean the server failed on its own, not the request: never acceptable.
CRASHES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}
VERIFIED_SITES = {"site-a": (3, 0.0), "site-b": (5, 0.25)}  # name: (weight, model offset)
SPARE_SITE = "site-c"  # may leave and re-join during the fuzzing; leaves before the seal
TRAINER_SITE = "site-t"  # a trainer never approved: its TrainerService is fuzzed
FOREIGN, NO_CERTIFICATE = "site-a from a foreign CA", "no client certificate"
SERVICE_PROCESS = {"ucadi.v1.FederationService": "aggregator", "ucadi.v1.KeyService": "crypto",
                   "ucadi.v1.SumService": "crypto", "ucadi.v1.TrainerService": TRAINER_SITE,
                   "inference.GRPCInferenceService": "inference",
                   "ucadi.v1.DiagnosisService": "inference"}
# Who may call what (role, or role:name for one identity); "*" is any federation certificate.
SITE, ANY, AGGREGATOR = ("site",), ("*",), ("service:aggregator",)
ALLOWED: dict[str, tuple[str, ...]] = {
    "FederationService.GetStatus": ANY, "FederationService.*": SITE,
    "KeyService.RegisterSiteKey": SITE, "KeyService.GetWrappedKey": SITE,
    "KeyService.ListSiteKeys": ("custodian",), "KeyService.PutWrappedKeys": ("custodian",),
    "KeyService.ApproveSiteKey": ("custodian",),
    "KeyService.GetActiveKey": ANY,
    "KeyService.GetSiteApproval": ("service", "custodian", "operator"),
    "SumService.AddContribution": SITE + AGGREGATOR, "SumService.FetchSum": SITE + AGGREGATOR,
    "SumService.GetRoundStatus": SITE + AGGREGATOR, "SumService.*": AGGREGATOR,
    "TrainerService.*": (f"site:{TRAINER_SITE}", "operator"),
    "GRPCInferenceService.*": ANY, "DiagnosisService.*": ANY, "Health.*": ANY,
}
# Random requests to these never hold what the RPC accepts (a ciphertext, a key, a study).
REFUSE_RANDOM = {"UploadUpdate", "AddContribution", "RegisterSiteKey", "Diagnose"}
# Legitimate but destructive calls left out: they would end what the run verifies.
LEFT_OUT = {("Leave", "site-a"), ("Leave", "site-b"), ("RequestLeave", TRAINER_SITE),
            ("RequestLeave", "operator")}


@dataclass(frozen=True)
class Caller:
    """An identity the fuzzer calls with."""

    name: str
    role: str
    tls: TLSFiles | None

    def allowed(self, rpc: Rpc) -> bool:
        """Whether the RPC's rules let this caller in."""
        if self.tls is None or self.name == FOREIGN:
            return False
        short = str(rpc).split(".")[0]
        rule = ALLOWED.get(str(rpc)) or ALLOWED.get(f"{short}.*", ())
        return "*" in rule or self.role in rule or f"{self.role}:{self.name}" in rule


class Harness:
    """The running federation, the callers' channels and the checks being filled."""

    def __init__(self, federation: LocalFederation, callers: list[Caller],
                 processes: dict[str, ServiceProcess]) -> None:
        self.federation = federation
        self.callers = {c.name: c for c in callers}
        self.processes = processes
        self._channels: dict[tuple[str, str], grpc.Channel] = {}
        self.checks: dict[str, Check] = {}
        self.health = Check(PART, "every process alive and SERVING after each batch")

    def channel(self, caller: Caller, process: str) -> grpc.Channel:
        """A (cached) channel from `caller` to a process."""
        key = (caller.name, process)
        if key not in self._channels:
            target = self.processes[process].target
            options = grpc_options() + [("grpc.ssl_target_name_override", "localhost")]
            credentials = (channel_credentials(caller.tls) if caller.tls is not None else
                           grpc.ssl_channel_credentials(
                               self.federation.tls("operator").ca.read_bytes()))
            self._channels[key] = grpc.secure_channel(target, credentials, options=options)
        return self._channels[key]

    def check(self, rpc: Rpc) -> Check:
        """The table row of the RPC's service."""
        service = rpc.service.rsplit(".", 1)[-1]
        return self.checks.setdefault(service, Check(PART, service))

    def process_of(self, rpc: Rpc, rng: np.random.Generator) -> str:
        """Which process serves the RPC (health: any of them)."""
        if rpc.service in SERVICE_PROCESS:
            return SERVICE_PROCESS[rpc.service]
        return str(rng.choice(sorted(self.processes)))

    def send(self, rpc: Rpc, caller: Caller, request: Any, must_refuse: bool, label: str,
             process: str) -> grpc.StatusCode:
        """Make one call and record whether it held."""
        code, details = call(self.channel(caller, process), rpc, request, CALL_TIMEOUT_S)
        if code in CRASHES:
            failure = f"{rpc} from {caller.name} ({label}): {code.name}: {details[:300]}"
        elif code == grpc.StatusCode.OK and (must_refuse or not caller.allowed(rpc)):
            failure = f"{rpc} from {caller.name} ({label}): accepted"
        else:
            failure = None
        self.check(rpc).record(failure, code.name)
        return code

    def healthy(self, after: str) -> None:
        """Every process alive and SERVING; recorded as one try of the health check."""
        operator = self.callers["operator"]
        problems = []
        for name, process in self.processes.items():
            if not process.alive():
                problems.append(f"{name} exited with {process.process.returncode}")
                continue
            try:
                answer = health_pb2_grpc.HealthStub(self.channel(operator, name)).Check(
                    health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
                if answer.status != health_pb2.HealthCheckResponse.SERVING:
                    problems.append(f"{name} is {answer.status}")
            except grpc.RpcError as exc:
                problems.append(f"{name}: {exc.code().name} {exc.details()}")
        self.health.record(f"after {after}: {'; '.join(problems)}" if problems else None)

    def close(self) -> None:
        """Close every channel."""
        for channel in self._channels.values():
            channel.close()
