"""After the fuzzing: the round the fuzzed federation still has to get right. Both verified
sites send valid updates (site-a through the sum service, site-b through the aggregator);
replays, another site's ciphertext and late uploads must be refused; the round must seal to
the FedAvg of exactly those two updates, each counted once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from chaos.messages import Rpc, all_rpcs, call
from chaos.outcome import Check
from chaos.protocol_cases import FuzzSite, chunks
from chaos.protocol_harness import PART, SPARE_SITE, Harness
from ucadi.demo.federation import LocalFederation
from ucadi.lwe import FixedPointCodec
from ucadi.lwe.stream import decrypt_fedavg_file
from ucadi.v1 import crypto_pb2, federation_pb2

# FedAvg decrypts exactly up to the codec's 2^-17 rounding (BatchNorm statistics 2^-12).
FEDAVG_TOLERANCE = 1e-3


def _rpc(name: str) -> Rpc:
    return next(r for r in all_rpcs() if r.name == name)


def _upload(site: FuzzSite, payload: bytes, **header: Any) -> list[Any]:
    message = federation_pb2.UploadUpdateRequest
    parts = [] if header.get("contributed") else chunks(payload)
    return [message(header=site.header(payload, **header)), *(message(chunk=c) for c in parts)]


def _contribution(site: FuzzSite, payload: bytes) -> list[Any]:
    message = crypto_pb2.ContributionMessage
    meta = crypto_pb2.ContributionMetadata(federation=site.federation.plan.federation_id,
                                           round=1, site=site.name)
    return [message(metadata=meta), *(message(chunk=c) for c in chunks(payload)),
            message(commit=True)]


def legitimate_round(harness: Harness, sites: dict[str, FuzzSite], scratch: Path
                     ) -> list[Check]:
    """Valid updates in, replays out, the seal checked; two table rows."""
    answers = Check(PART, "valid updates accepted; replays, copies, late uploads refused")
    fedavg = Check(PART, "round sealed to the FedAvg of exactly the valid updates")
    site_a, site_b = sites["site-a"], sites["site-b"]
    payload_a, payload_b = site_a.ciphertext(1, scratch), site_b.ciphertext(1, scratch)
    upload, contribute = _rpc("UploadUpdate"), _rpc("AddContribution")
    # The spare site (which a random Leave may have taken out) is expected again, so the round
    # stays open for the replays below until it leaves.
    sites[SPARE_SITE].join()

    def expect(label: str, caller: str, rpc: Rpc, messages: list[Any], accepted: bool) -> None:
        process = "aggregator" if rpc is upload else "crypto"
        code, details = call(harness.channel(harness.callers[caller], process), rpc, messages,
                             30.0)
        held = (code == grpc.StatusCode.OK) == accepted
        answers.record(None if held else f"{label}: {code.name} {details[:200]}",
                       f"{label}: {code.name}")
    expect("site-a adds its ciphertext at the sum service", "site-a", contribute,
           _contribution(site_a, payload_a), True)
    expect("site-a records it", "site-a", upload, _upload(site_a, payload_a, contributed=True),
           True)
    expect("site-b uploads through the aggregator", "site-b", upload,
           _upload(site_b, payload_b), True)
    for label, caller, rpc, messages in (
            ("site-a records again", "site-a", upload,
             _upload(site_a, payload_a, contributed=True)),
            ("site-a uploads the same again", "site-a", upload, _upload(site_a, payload_a)),
            ("site-a adds the same again at the sum", "site-a", contribute,
             _contribution(site_a, payload_a)),
            ("site-b uploads the same again", "site-b", upload, _upload(site_b, payload_b)),
            ("site-a sends site-b's ciphertext", "site-a", upload, _upload(site_a, payload_b)),
            ("site-a uploads a fresh second update", "site-a", upload,
             _upload(site_a, site_a.ciphertext(1, scratch)))):
        expect(label, caller, rpc, messages, False)
    try:  # the spare site may have left already, by a random Leave
        sites[SPARE_SITE].stub.Leave(federation_pb2.LeaveRequest(reason="chaos"), timeout=30)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
    federation = harness.federation
    try:
        status = wait_sealed(federation)
    except TimeoutError as exc:
        fedavg.record(str(exc))
        return [answers, fedavg]
    expect("site-b uploads after the seal", "site-b", upload,
           _upload(site_b, site_b.ciphertext(1, scratch)), False)
    uploaded = sorted(status.rounds[0].uploaded_sites)
    average, weight = summed(federation, 1)
    want = (site_a.weight * site_a.vector + site_b.weight * site_b.vector) / (
        site_a.weight + site_b.weight)
    error = float(np.abs(average - want).max())
    problems = [f"uploaded sites {uploaded}" if uploaded != ["site-a", "site-b"] else "",
                f"total weight {weight}, not {site_a.weight + site_b.weight}"
                if weight != site_a.weight + site_b.weight else "",
                f"average off by {error:.2e}" if error > FEDAVG_TOLERANCE else ""]
    failure = "; ".join(p for p in problems if p)
    fedavg.record(failure or None, f"sites {uploaded}, weight {weight}, max error {error:.1e}")
    harness.healthy("the seal")
    return [answers, fedavg]


def summed(federation: LocalFederation, version: int) -> tuple[np.ndarray, int]:
    """(FedAvg vector, total weight) that global version `version` decrypts to."""
    codec = FixedPointCodec.for_parameters(federation.secret.params)
    return decrypt_fedavg_file(federation.secret, federation.stored_global(version), codec)


def wait_sealed(federation: LocalFederation, timeout: float = 120.0) -> Any:
    """The status once round 1 is sealed and the federation completed."""
    deadline = time.monotonic() + timeout
    while True:
        status = federation.status()
        if status.current.state == federation_pb2.ROUND_STATE_COMPLETED:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"round 1 did not seal within {timeout:.0f} s: {status.current}")
        time.sleep(0.2)
