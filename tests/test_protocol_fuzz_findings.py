"""What `make chaos`'s protocol fuzzing found (issue 18), each now answered with a status a
caller can act on: counts and round numbers beyond what SQLite stores were UNKNOWN (an
OverflowError), an update claiming 0 local epochs was accepted, any site could read or stop
another site's trainer, and a trainer asked to leave while it waited for its key exited with
an error."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from test_aggregator_rounds import Clock, coordinator, upload

from services.aggregator.contracts import RejectedUpload
from services.crypto.server import run_crypto_service
from services.trainer.agent import AgentStatus
from services.trainer.keys import obtain_secret
from services.trainer.server import TrainerServicer
from ucadi.errors import UcadiError
from ucadi.lwe import generate_secret_key
from ucadi.lwe.custodian import generate_custodian_key
from ucadi.ops.serving import RunningServer, serve
from ucadi.ops.tls import TLSFiles, secure_channel
from ucadi.v1 import trainer_pb2, trainer_pb2_grpc
from ucadi.wire.crypto_client import CryptoServiceError, SumClient

BEYOND_INT64 = 2**64 - 1


@pytest.fixture(scope="module")
def secret():
    return generate_secret_key()


@pytest.fixture()
def crypto_server(tmp_path: Path, federation_pki: Path) -> Iterator[RunningServer]:
    running = run_crypto_service(tmp_path / "state", "127.0.0.1:0",
                                 TLSFiles.from_dir(federation_pki / "crypto"), None)
    yield running
    running.stop(0)


def test_a_join_claiming_more_cases_than_can_be_stored_is_invalid(tmp_path, secret):
    coord = coordinator(tmp_path, secret, Clock())
    with pytest.raises(UcadiError, match="is not a number of cases") as refused:
        coord.join("a", BEYOND_INT64)
    assert refused.value.status == "INVALID_ARGUMENT"


@pytest.mark.parametrize("claim", [{"num_samples": BEYOND_INT64}, {"num_samples": 0},
                                   {"local_epochs": 0}])
def test_an_update_claiming_impossible_counts_is_refused_before_its_bytes(tmp_path, secret,
                                                                          claim):
    coord = coordinator(tmp_path, secret, Clock())
    for site in ("a", "b"):
        coord.join(site, 5)
    coord.step()
    header = SimpleNamespace(round=1, base_version=0, parameter_set=secret.params.name,
                             key_id=secret.key_id_hex, layout_hash="ab" * 32, total_size=1,
                             sha256="0" * 64, num_samples=5, local_epochs=1,
                             optimizer_digest="")
    vars(header).update(claim)
    with pytest.raises(RejectedUpload, match="is not a count an update can carry") as refused:
        coord.check_upload("a", header)
    assert refused.value.status == "INVALID_ARGUMENT"
    upload(coord, secret, tmp_path, "a", np.zeros(5000), 5)  # the round still takes a's update


def test_round_numbers_beyond_what_can_be_stored_are_not_found(crypto_server, federation_pki,
                                                               tmp_path):
    def client(who: str) -> SumClient:
        return SumClient(secure_channel(crypto_server.target,
                                        TLSFiles.from_dir(federation_pki / who)))
    aggregator, site = client("aggregator"), client("main-campus")
    for call in (lambda: aggregator.close_round("fed", BEYOND_INT64),
                 lambda: site.status("fed", BEYOND_INT64),
                 lambda: list(site.sum_chunks("fed", BEYOND_INT64))):
        with pytest.raises((CryptoServiceError, grpc.RpcError)) as refused:
            call()
        code = getattr(refused.value, "code", None)
        assert (code() if callable(code) else code) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(CryptoServiceError) as refused:
        aggregator.open_round("fed", BEYOND_INT64, key_id="0" * 32,
                              parameter_set="rlwe-n4096-q56", layout_hash=b"\0" * 32,
                              slot_count=10)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_only_the_site_itself_or_an_operator_may_read_or_stop_its_trainer(federation_pki):
    status = AgentStatus()
    servicer = TrainerServicer("main-campus", status, "cpu")
    running = serve(lambda s: trainer_pb2_grpc.add_TrainerServiceServicer_to_server(servicer, s),
                    service_names=["ucadi.v1.TrainerService"],
                    tls=TLSFiles.from_dir(federation_pki / "main-campus"), metrics_address=None)
    try:
        def stub(who: str) -> trainer_pb2_grpc.TrainerServiceStub:
            return trainer_pb2_grpc.TrainerServiceStub(secure_channel(
                running.target, TLSFiles.from_dir(federation_pki / who)))
        with pytest.raises(grpc.RpcError) as denied:
            stub("optical-valley").RequestLeave(trainer_pb2.RequestLeaveRequest(), timeout=10)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as denied:
            stub("optical-valley").GetStatus(trainer_pb2.TrainerStatusRequest(), timeout=10)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert not status.leave_requested.is_set()
        assert stub("operator").GetStatus(trainer_pb2.TrainerStatusRequest(),
                                          timeout=10).site == "main-campus"
        stub("main-campus").RequestLeave(trainer_pb2.RequestLeaveRequest(), timeout=10)
        assert status.leave_requested.is_set()
    finally:
        running.stop(0)


def test_a_site_asked_to_leave_while_waiting_for_its_key_stops_without_an_error(
        crypto_server, federation_pki, tmp_path):
    leave = threading.Event()
    threading.Timer(1.0, leave.set).start()
    secret = obtain_secret(crypto_server.target, TLSFiles.from_dir(federation_pki / "nccid-uk"),
                           tmp_path, wait_s=60, custodian=generate_custodian_key().public_key,
                           cancelled=leave)
    assert secret is None, "no KeyNotApprovedError claiming it waited 60 s"
