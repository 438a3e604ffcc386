"""Protocol fuzzing of every RPC of every service, over their real mutual TLS.

A federation runs as real processes (LocalFederation: crypto service, aggregator; a trainer
whose site is never approved, so its status service answers; an inference server), with three
sites whose updates the fuzzer makes by hand. Every RPC gets random and boundary requests from
every identity of the PKI, a certificate from a foreign CA and no certificate; the streaming
RPCs also get transfers broken in one way each (protocol_cases.py). After every RPC's batch all
processes must be alive and SERVING. What must hold for each call: no INTERNAL, UNKNOWN or
DATA_LOSS (an unhandled server error), and nothing accepted that should not be: a caller the
RPC does not allow, a broken transfer, a random ciphertext. Then both verified sites send valid
updates (one through the sum service, one through the aggregator), replays and late uploads
must be refused, and the round must seal to exactly the FedAvg of those two updates.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from chaos.dicom import CLASSES, CONFIG
from chaos.messages import Rpc, ValuePool, all_rpcs, requests_for
from chaos.outcome import Check
from chaos.protocol_cases import (
    FuzzSite,
    StreamCase,
    contribution_cases,
    diagnose_cases,
    upload_cases,
)
from chaos.protocol_harness import (
    FOREIGN,
    LEFT_OUT,
    NO_CERTIFICATE,
    REFUSE_RANDOM,
    SPARE_SITE,
    TRAINER_SITE,
    VERIFIED_SITES,
    Caller,
    Harness,
)
from chaos.protocol_round import legitimate_round
from ucadi.demo.federation import FederationPlan, LocalFederation
from ucadi.demo.processes import ServiceProcess, start_service
from ucadi.model import ModelCard, build_model, save_checkpoint
from ucadi.ops.pki import create_ca, issue_certificate
from ucadi.ops.tls import TLSFiles

FULL_RANDOM_PER_RPC = 500
QUICK_RANDOM_PER_RPC = 3


def defuse(rpc: Rpc, caller: Caller, request: Any, federation_id: str) -> Any:
    """A request made harmless where the caller may legitimately do damage: the custodian does
    not rotate the active key, the aggregator's identity does not seal the real federation's
    rounds."""
    if rpc.name == "PutWrappedKeys":
        request.activate = False
    if rpc.service == "ucadi.v1.SumService" and rpc.name in ("OpenRound", "SealRound",
                                                             "CloseRound"):
        if getattr(request, "federation", "") == federation_id and caller.role == "service":
            request.federation = federation_id + "-fuzz"
    return request


def fuzz_rpc(harness: Harness, rpc: Rpc, count: int, rng: np.random.Generator,
             pool: ValuePool, cases: list[StreamCase]) -> None:
    """Random requests from random callers, every caller once, then the RPC's broken streams."""
    callers = list(harness.callers.values())
    federation_id = harness.federation.plan.federation_id
    plan = [callers[int(rng.integers(0, len(callers)))] for _ in range(count)] + callers
    for caller in plan:
        if (rpc.name, caller.name) in LEFT_OUT:
            continue
        request = requests_for(rpc, rng, pool)
        if not rpc.client_streaming:
            request = defuse(rpc, caller, request, federation_id)
        harness.send(rpc, caller, request, rpc.name in REFUSE_RANDOM, "random",
                     harness.process_of(rpc, rng))
    for case in cases:
        if case.rpc == rpc.name:
            harness.send(rpc, harness.callers[case.caller], case.messages, True, case.label,
                         harness.process_of(rpc, rng))
    harness.healthy(str(rpc))


def start_inference(federation: LocalFederation, folder: Path) -> ServiceProcess:
    """An inference server process (cpu-small model, mutual TLS)."""
    model = build_model("densenet3d", "cpu-small", num_classes=len(CLASSES))
    save_checkpoint(folder, model, ModelCard.for_model(model, CLASSES, CONFIG.to_dict(),
                                                       version=1))
    process = start_service("inference", "inference", [
        "--model", str(folder), "--tls-dir", str(federation.pki / "inference"),
        "--address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0", "--device", "cpu"],
        federation.logs)
    federation.processes["inference"] = process
    return process


def callers_of(federation: LocalFederation, root: Path) -> list[Caller]:
    """Every identity of the PKI, site-a's name under a foreign CA, and no certificate."""
    roles = {"aggregator": "service", "crypto": "service", "custodian": "custodian",
             "operator": "operator", "inference": "service", **{s: "site" for s in (
                 *VERIFIED_SITES, SPARE_SITE, TRAINER_SITE)}}
    callers = [Caller(name, role, federation.tls(name)) for name, role in roles.items()]
    create_ca(root / "foreign-ca", "foreign-ca")
    foreign = issue_certificate(root / "foreign-ca", root / "foreign", "site-a", "site")
    callers.append(Caller(FOREIGN, "site", TLSFiles(federation.tls("site-a").ca, foreign.cert,
                                                    foreign.key)))
    callers.append(Caller(NO_CERTIFICATE, "", None))
    return callers


@contextlib.contextmanager
def running_federation(root: Path) -> Iterator[tuple[LocalFederation, dict[str, FuzzSite]]]:
    """Crypto service, aggregator, a trainer, an inference server, and the three sites joined
    (round 1 collecting, expecting them)."""
    sites = [*VERIFIED_SITES, SPARE_SITE, TRAINER_SITE]
    federation = LocalFederation(FederationPlan(
        root=root / "federation", manifest=root / "no-studies.csv", sites=sites, rounds=1,
        min_sites=2, model_preset="cpu-small", round_timeout_s=3600.0,
        liveness_timeout_s=3600.0,
        # The fuzzed sites upload by hand without the masking phases: the shared-key mode.
        pairwise_masks=False))
    federation.provision()
    issue_certificate(federation.pki / "ca", federation.pki / "inference", "inference",
                      "service")
    federation.create_key()
    fuzz_sites: dict[str, FuzzSite] = {}
    try:
        federation.start_crypto()
        federation.start_aggregator()
        federation.start_trainer(TRAINER_SITE)
        start_inference(federation, root / "model")
        for name, (weight, offset) in {**VERIFIED_SITES, SPARE_SITE: (1, 0.5)}.items():
            fuzz_sites[name] = FuzzSite(federation, name, weight, offset)
        federation.approve_sites(list(fuzz_sites))
        for site in fuzz_sites.values():
            site.join()
        federation.wait_for(lambda s: s.current.round == 1, timeout=120, poll_s=0.2)
        yield federation, fuzz_sites
    finally:
        for site in fuzz_sites.values():
            site.close()
        federation.stop()


def run(quick: bool, seed: int = 0, work_dir: Path | None = None) -> list[Check]:
    """Fuzz every RPC, then verify the round; the table's protocol rows."""
    rng = np.random.default_rng(seed)
    count = QUICK_RANDOM_PER_RPC if quick else FULL_RANDOM_PER_RPC
    with tempfile.TemporaryDirectory(prefix="ucadi-chaos-protocol-", dir=work_dir) as scratch, \
            running_federation(Path(scratch)) as (federation, sites):
        root = Path(scratch)
        processes = {name: federation.processes[name]
                     for name in ("aggregator", "crypto", f"trainer-{TRAINER_SITE}", "inference")}
        processes[TRAINER_SITE] = processes.pop(f"trainer-{TRAINER_SITE}")
        harness = Harness(federation, callers_of(federation, root), processes)
        secret = federation.secret
        pool = ValuePool((federation.plan.federation_id, *sites, TRAINER_SITE, secret.key_id_hex,
                          secret.params.name, sites["site-a"].joined.model.layout_hash,
                          "ct_volume", "FP32", "densenet3d"), (0, 1, 2, 3))
        cases = (upload_cases(sites["site-a"], root)
                 + contribution_cases(sites["site-a"], "site-b", root)
                 + diagnose_cases("operator"))
        rpcs = [r for r in all_rpcs() if r.name != "Watch"]  # Health.Watch streams forever
        try:
            for rpc in rpcs:
                fuzz_rpc(harness, rpc, count, rng, pool, cases)
            verified = legitimate_round(harness, sites, root)
            for rpc in rpcs:  # the same again with a sealed round and a global version
                fuzz_rpc(harness, rpc, max(1, count // 4), rng, pool, [])
        finally:
            harness.close()
    return [*sorted(harness.checks.values(), key=lambda c: c.name), harness.health, *verified]


