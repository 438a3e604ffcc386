"""`make chaos` in short (issue 18): the quick version of each part holds on every try, and
the protocol fuzzing reaches every RPC of every service."""

from __future__ import annotations

import pytest

from chaos import dicom, kill, protocol
from chaos.messages import all_rpcs
from chaos.outcome import Check, table
from chaos.protocol_harness import SERVICE_PROCESS
from ucadi.v1 import crypto_pb2, federation_pb2, inference_pb2, open_inference_pb2, trainer_pb2

pytestmark = pytest.mark.slow


def assert_held(checks: list[Check]) -> None:
    print(table(checks))
    for check in checks:
        assert check.ok, f"{check.part}: {check.name}: tried {check.tried}, failed: " \
                         f"{check.failures[:3]}"


def test_every_rpc_of_every_service_is_fuzzed_and_routed_to_its_process():
    services = {s.full_name: {m.name for m in s.methods}
                for module in (federation_pb2, crypto_pb2, trainer_pb2, inference_pb2,
                               open_inference_pb2)
                for s in module.DESCRIPTOR.services_by_name.values()}
    fuzzed: dict[str, set[str]] = {}
    for rpc in all_rpcs():
        fuzzed.setdefault(rpc.service, set()).add(rpc.name)
    assert {name: fuzzed[name] for name in services} == services
    assert set(services) <= set(SERVICE_PROCESS)


def test_damaged_dicom_series_never_crash_inspect_training_or_diagnose(tmp_path):
    assert_held(dicom.run(quick=True, seed=0, work_dir=tmp_path))


def test_fuzzed_rpcs_never_crash_a_service_or_get_accepted_wrongly(tmp_path):
    assert_held(protocol.run(quick=True, seed=0, work_dir=tmp_path))


def test_killed_and_restarted_services_finish_counting_every_upload_once(tmp_path,
                                                                        tiny_cohort):
    assert_held(kill.run(quick=True, seed=0, work_dir=tmp_path, manifest=tiny_cohort))
