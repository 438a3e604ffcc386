"""The Open Inference Protocol endpoint over mutual TLS: tritonclient, bad tensors, overload,
hot reload under load, health and metrics.

tritonclient's own generated stubs define the protobuf package `inference` too, and one
process cannot register the same message names twice; so tritonclient runs in a child
process (a real external client, as in production) while the server runs in this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from model_publishing import point_current, publish

from services.inference.batching import BatchingConfig
from services.inference.server import InferenceService, ServiceConfig
from ucadi.ops.tls import TLSFiles, secure_channel
from ucadi.v1 import open_inference_pb2 as oip
from ucadi.v1 import open_inference_pb2_grpc as oip_grpc

torch.set_num_threads(1)
MODEL = "ucadi-covid-ct"
INPUT_SHAPE = (1, 16, 32, 32)

TRITON_CLIENT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

url, tls_dir, tensor_file, model = sys.argv[1:5]
client = triton.InferenceServerClient(
    url, ssl=True, root_certificates=f"{tls_dir}/ca.crt", private_key=f"{tls_dir}/tls.key",
    certificate_chain=f"{tls_dir}/tls.crt")
x = np.load(tensor_file)
inputs = [triton.InferInput("ct_volume", list(x.shape), "FP32")]
inputs[0].set_data_from_numpy(x)
result = client.infer(model, inputs, outputs=[triton.InferRequestedOutput("probabilities")],
                      request_id="study-42")
response = result.get_response()
bad = [triton.InferInput("ct_volume", [1, 1, 16, 8, 8], "FP32")]
bad[0].set_data_from_numpy(np.zeros((1, 1, 16, 8, 8), np.float32))
errors = {}
for name, call in {"bad_shape": lambda: client.infer(model, bad),
                   "unknown_model": lambda: client.get_model_metadata("nope"),
                   "model_config": lambda: client.get_model_config(model)}.items():
    try:
        call()
        errors[name] = "OK"
    except InferenceServerException as exc:
        errors[name] = exc.status()
meta = client.get_model_metadata(model)
print(json.dumps({
    "live": client.is_server_live(), "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready(model),
    "server_name": client.get_server_metadata().name,
    "versions": list(meta.versions), "inputs": [[t.name, t.datatype, list(t.shape)]
                                                for t in meta.inputs],
    "outputs": [[t.name, t.datatype, list(t.shape)] for t in meta.outputs],
    "probabilities": result.as_numpy("probabilities").tolist(),
    "answered_by": response.model_version, "id": response.id, "errors": errors}))
"""


def expected_probabilities(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, TLSFiles]):
    root = tmp_path_factory.mktemp("models")
    model = publish(root / "versions" / "3", version=3, seed=0)
    point_current(root, 3)
    service = InferenceService(ServiceConfig(model_dir=root))
    running = service.start(tls=pki["server"])
    channel = secure_channel(running.target, pki["client"])
    yield service, running, channel, model
    channel.close()
    service.stop(0)


def infer_request(x: np.ndarray, **fields: object) -> oip.ModelInferRequest:
    tensor = oip.ModelInferRequest.InferInputTensor(name="ct_volume", datatype="FP32",
                                                    shape=list(x.shape))
    request = oip.ModelInferRequest(model_name=MODEL, inputs=[tensor], **fields)
    request.raw_input_contents.append(x.astype("<f4").tobytes())
    return request


def probabilities_of(response: oip.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(
        tuple(response.outputs[0].shape))


def test_tritonclient_over_mutual_tls_gets_metadata_and_the_in_process_result(
        served, pki, tmp_path: Path):
    service, running, _, model = served
    x = np.random.default_rng(1).normal(size=(5, *INPUT_SHAPE)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    tls_dir = pki["client"].ca.parent
    done = subprocess.run([sys.executable, "-c", TRITON_CLIENT, running.target, str(tls_dir),
                           str(tmp_path / "x.npy"), MODEL], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["live"] and answer["ready"] and answer["model_ready"]
    assert answer["server_name"] == "ucadi-inference"
    assert answer["versions"] == ["3"] and answer["answered_by"] == "3"
    assert answer["inputs"] == [["ct_volume", "FP32", [-1, *INPUT_SHAPE]]]
    assert answer["outputs"] == [["probabilities", "FP32", [-1, 2]]]
    assert answer["id"] == "study-42"
    np.testing.assert_allclose(answer["probabilities"], expected_probabilities(model, x),
                               rtol=1e-5, atol=1e-6)
    assert answer["errors"] == {"bad_shape": "StatusCode.INVALID_ARGUMENT",
                                "unknown_model": "StatusCode.NOT_FOUND",
                                "model_config": "StatusCode.UNIMPLEMENTED"}


def test_client_without_a_federation_certificate_is_refused(served):
    _, running, _, _ = served
    with grpc.insecure_channel(running.target) as plain:
        with pytest.raises(grpc.RpcError) as refused:
            oip_grpc.GRPCInferenceServiceStub(plain).ServerLive(oip.ServerLiveRequest(),
                                                                timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_typed_fp32_contents_are_accepted_like_raw_bytes(served):
    _, _, channel, model = served
    x = np.random.default_rng(2).normal(size=(1, *INPUT_SHAPE)).astype(np.float32)
    tensor = oip.ModelInferRequest.InferInputTensor(
        name="ct_volume", datatype="FP32", shape=list(x.shape),
        contents=oip.InferTensorContents(fp32_contents=x.ravel().tolist()))
    response = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
        oip.ModelInferRequest(model_name=MODEL, inputs=[tensor]))
    np.testing.assert_allclose(probabilities_of(response), expected_probabilities(model, x),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case,mutate,message", [
    ("wrong shape", lambda r: r.inputs[0].shape.__setitem__(3, 64), "does not fit the model"),
    ("wrong dtype", lambda r: setattr(r.inputs[0], "datatype", "FP64"), "datatype 'FP64'"),
    ("short payload", lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 12), "needs"),
    ("wrong input name", lambda r: setattr(r.inputs[0], "name", "image"), "unknown input"),
    ("unknown output", lambda r: r.outputs.add(name="logits"), "unknown output"),
    ("nan values", lambda r: r.raw_input_contents.__setitem__(
        0, np.full((1, *INPUT_SHAPE), np.nan, "<f4").tobytes()), "NaN"),
])
def test_bad_tensor_gets_invalid_argument_and_the_server_stays_healthy(served, case, mutate,
                                                                       message):
    _, _, channel, _ = served
    stub = oip_grpc.GRPCInferenceServiceStub(channel)
    request = infer_request(np.zeros((1, *INPUT_SHAPE), np.float32))
    mutate(request)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert message in refused.value.details()
    assert stub.ServerLive(oip.ServerLiveRequest()).live
    assert stub.ModelInfer(infer_request(np.zeros((1, *INPUT_SHAPE), np.float32))).outputs


def test_version_other_than_the_served_one_is_not_found(served):
    _, _, channel, _ = served
    with pytest.raises(grpc.RpcError) as refused:
        oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            infer_request(np.zeros((1, *INPUT_SHAPE), np.float32), model_version="2"))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "current version is '3'" in refused.value.details()


def test_health_reflection_and_metrics_are_served(served):
    _, running, channel, _ = served
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("inference.GRPCInferenceService", "ucadi.v1.DiagnosisService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    stub = oip_grpc.GRPCInferenceServiceStub(channel)
    stub.ModelInfer(infer_request(np.zeros((2, *INPUT_SHAPE), np.float32)))
    bad = infer_request(np.zeros((1, *INPUT_SHAPE), np.float32))
    bad.inputs[0].datatype = "FP64"
    with pytest.raises(grpc.RpcError):  # counted by its code (other tests may run elsewhere)
        stub.ModelInfer(bad)
    url = f"http://127.0.0.1:{running.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    assert 'ucadi_inference_requests_total{code="OK",rpc="ModelInfer"}' in text
    assert 'ucadi_inference_requests_total{code="INVALID_ARGUMENT",rpc="ModelInfer"}' in text
    assert "ucadi_inference_latency_seconds_bucket" in text
    assert "ucadi_inference_batch_size_count" in text
    assert "ucadi_inference_queue_depth" in text
    assert "ucadi_inference_model_version 3.0" in text


def test_overload_gets_resource_exhausted_and_the_server_recovers(tmp_path: Path, pki):
    publish(tmp_path / "model", version=1, seed=0)
    service = InferenceService(ServiceConfig(
        model_dir=tmp_path / "model",
        batching=BatchingConfig(max_batch=8, max_delay_s=0.0, max_queue=1)))
    running = service.start(tls=pki["server"], metrics_address=None)
    x = np.zeros((8, *INPUT_SHAPE), np.float32)
    try:
        with secure_channel(running.target, pki["client"]) as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)

            def call(_: int) -> grpc.StatusCode:
                try:
                    stub.ModelInfer(infer_request(x))
                    return grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    return exc.code()

            with ThreadPoolExecutor(12) as pool:
                codes = list(pool.map(call, range(12)))
            assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
            assert grpc.StatusCode.OK in codes
            assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert call(0) == grpc.StatusCode.OK
    finally:
        service.stop(0)


def test_hot_reload_under_concurrent_requests_drops_nothing(tmp_path: Path, pki):
    models = {"1": publish(tmp_path / "versions" / "1", version=1, seed=0)}
    point_current(tmp_path, 1)
    service = InferenceService(ServiceConfig(model_dir=tmp_path, poll_interval_s=0.05))
    running = service.start(tls=pki["server"], metrics_address=None)
    x = np.random.default_rng(3).normal(size=(2, *INPUT_SHAPE)).astype(np.float32)
    answers: list[tuple[str, np.ndarray]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        with secure_channel(running.target, pki["client"]) as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                try:
                    response = stub.ModelInfer(infer_request(x))
                except grpc.RpcError as exc:
                    failures.append(exc)
                    return
                answers.append((response.model_version, probabilities_of(response)))

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        while len(answers) < 8:
            stop.wait(0.01)
        models["2"] = publish(tmp_path / "versions" / "2", version=2, seed=1)
        point_current(tmp_path, 2)
        before = len(answers)
        while not any(v == "2" for v, _ in answers[before:]) or len(answers) < before + 8:
            assert not failures, failures
            stop.wait(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        service.stop(0)
    assert not failures
    assert {version for version, _ in answers} == {"1", "2"}
    expected = {v: expected_probabilities(m, x) for v, m in models.items()}
    for version, probabilities in answers:
        np.testing.assert_allclose(probabilities, expected[version], rtol=1e-5, atol=1e-6)
    switched = [v for v, _ in answers].index("2")
    assert all(v == "2" for v, _ in answers[switched + 4:])


def test_request_past_the_server_deadline_gets_deadline_exceeded(tmp_path: Path, pki):
    publish(tmp_path / "model", version=1, seed=0)
    service = InferenceService(ServiceConfig(model_dir=tmp_path / "model",
                                             request_timeout_s=1e-6))
    running = service.start(tls=pki["server"], metrics_address=None)
    try:
        with secure_channel(running.target, pki["client"]) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                    infer_request(np.zeros((1, *INPUT_SHAPE), np.float32)))
        assert refused.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "deadline passed" in refused.value.details()
    finally:
        service.stop(0)


def test_requests_are_traced_through_preprocessing_and_batching(served):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ucadi.ops.tracing import use_span_exporter

    _, _, channel, _ = served
    exporter = InMemorySpanExporter()
    use_span_exporter(exporter)
    oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
        infer_request(np.zeros((1, *INPUT_SHAPE), np.float32)))
    names = {span.name for span in exporter.get_finished_spans()}
    assert "inference.batch" in names
    assert any(name.endswith("GRPCInferenceService/ModelInfer") for name in names)


@pytest.mark.slow
def test_ucadi_serve_inference_runs_as_a_process_and_stops_on_sigterm(tmp_path: Path):
    publish(tmp_path / "model", version=9, seed=0)
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [sys.executable, "-m", "ucadi.cli", "serve", "inference", "--model",
         str(tmp_path / "model"), "--insecure", "--port-file", str(port_file),
         "--metrics-address", "", "--max-batch", "8", "--max-delay-ms", "1"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(600):
            if port_file.exists() or process.poll() is not None:
                break
            threading.Event().wait(0.05)
        assert port_file.exists(), process.communicate(timeout=10)[0]
        target = f"127.0.0.1:{port_file.read_text().split()[0]}"
        with grpc.insecure_channel(target) as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            grpc.channel_ready_future(channel).result(timeout=30)
            for _ in range(100):
                if stub.ServerReady(oip.ServerReadyRequest()).ready:
                    break
                threading.Event().wait(0.05)
            metadata = stub.ModelMetadata(oip.ModelMetadataRequest(name=MODEL))
            assert list(metadata.versions) == ["9"]
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert "serving" in output
