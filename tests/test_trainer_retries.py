"""A site retries what can succeed later and says so: transient codes for the whole budget,
INTERNAL/UNKNOWN (a connection cut mid-call, or a server bug) a few times, a refusal never.
A real mutual-TLS server on 127.0.0.1 answers Join with scripted status codes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from services.trainer import client
from services.trainer.client import SERVER_ERROR_RETRIES, FederationClient, FederationRejected
from ucadi.ops.serving import serve
from ucadi.ops.tls import TLSFiles
from ucadi.v1 import federation_pb2, federation_pb2_grpc


class ScriptedFederation(federation_pb2_grpc.FederationServiceServicer):
    """Answers each Join with the next scripted code; OK once the script is used up."""

    def __init__(self) -> None:
        self.script: list[grpc.StatusCode] = []
        self.calls = 0

    def Join(self, request, context):  # noqa: N802 - the gRPC method name
        self.calls += 1
        if self.script:
            context.abort(self.script.pop(0), "scripted")
        return federation_pb2.JoinResponse(federation_id="f", site="main-campus")


@pytest.fixture(scope="module")
def aggregator(federation_pki: Path) -> Iterator[tuple[ScriptedFederation, str]]:
    servicer = ScriptedFederation()
    running = serve(lambda s: federation_pb2_grpc.add_FederationServiceServicer_to_server(
        servicer, s), service_names=["ucadi.v1.FederationService"],
        tls=TLSFiles.from_dir(federation_pki / "aggregator"), metrics_address=None)
    yield servicer, running.target
    running.stop(0)


def join(target: str, pki: Path) -> None:
    client = FederationClient(target, TLSFiles.from_dir(pki / "main-campus"),
                              retry_budget_s=30, rpc_timeout_s=5)
    try:
        client.join(5, "test")
    finally:
        client.close()


@pytest.mark.parametrize(("script", "outcome", "logged"), [
    ([grpc.StatusCode.UNAVAILABLE] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED], "joined",
     "retrying in"),
    ([grpc.StatusCode.INTERNAL] * SERVER_ERROR_RETRIES, "joined",
     f"server error, retry {SERVER_ERROR_RETRIES} of {SERVER_ERROR_RETRIES}"),
    ([grpc.StatusCode.UNKNOWN] * (SERVER_ERROR_RETRIES + 1), "UNKNOWN",
     "not retried: the same server error came back"),
    ([grpc.StatusCode.PERMISSION_DENIED], "PERMISSION_DENIED",
     "not retried: a refusal that retrying cannot change"),
], ids=["transient", "server-error-once-more", "server-error-repeats", "refusal"])
def test_only_what_can_succeed_later_is_retried_and_the_log_says_which(
        aggregator, federation_pki: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch,
        script: list[grpc.StatusCode], outcome: str, logged: str) -> None:
    servicer, target = aggregator
    servicer.script, servicer.calls = list(script), 0
    monkeypatch.setattr(client, "FIRST_RETRY_DELAY_S", 0.01)
    with caplog.at_level(logging.WARNING, logger="services.trainer.client"):
        if outcome == "joined":
            join(target, federation_pki)
            assert servicer.calls == len(script) + 1
        else:
            with pytest.raises(FederationRejected, match=outcome):
                join(target, federation_pki)
            assert servicer.calls == len(script)
    assert logged in caplog.text
