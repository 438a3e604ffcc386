"""Inference service: per-study latency and throughput against the model called in-process.

One synthetic `tiny` COVID-19 study is preprocessed once into its 5 samplings
[5, 1, 16, H, W]; the same tensor is then
  * run in this process (the baseline: softmax(model(x))),
  * sent with ModelInfer over mutual TLS to a real server process (1 client: latency),
  * sent by 8 concurrent clients to a batching server (the defaults) and to an unbatched one
    (one request per forward pass: --max-batch 1 --max-delay-ms 0) for throughput, both as
    whole studies (5 samplings per request) and as single samplings (1 per request).
The CT-native path (upload + preprocess + predict) is timed against preprocess + predict
in-process. Baseline and service alternate call by call so machine load hits both alike;
server and baseline both use one torch thread.
Goals (issue 7): service time <= 1.3x in-process at 1 client; batched throughput at 8 clients
>= 1.5x the unbatched service.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import torch

from services.inference.client import diagnose
from ucadi.ct import PreprocessConfig, preprocess_study
from ucadi.ct.synth import generate_case, plan_cohort
from ucadi.model import ModelCard, build_model, save_checkpoint
from ucadi.ops.pki import create_ca, issue_certificate
from ucadi.ops.tls import TLSFiles, secure_channel

SAMPLES = 5
CLIENTS = 8
OVERHEAD_GOAL = 1.3
BATCHING_GOAL = 1.5
SERVER_START_TIMEOUT_S = 60.0
MODEL_NAME = "ucadi-covid-ct"


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


@contextmanager
def _server(model_dir: Path, tls_dir: Path, work: Path, *flags: str) -> Iterator[str]:
    """A `python -m services.inference.server` process with one torch thread; yields its target."""
    port_file = work / f"port-{time.monotonic_ns()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "services.inference.server", "--model", str(model_dir),
         "--tls-dir", str(tls_dir), "--port-file", str(port_file), "--metrics-address", "",
         "--device", "cpu", *flags], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        started = time.monotonic()
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() - started > SERVER_START_TIMEOUT_S:
                raise RuntimeError("inference server did not start")
            time.sleep(0.05)
        yield f"127.0.0.1:{port_file.read_text().split()[0]}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _infer_call(channel: grpc.Channel, x: np.ndarray) -> Callable[[], np.ndarray]:
    from ucadi.v1 import open_inference_pb2 as oip
    from ucadi.v1 import open_inference_pb2_grpc as oip_grpc

    stub = oip_grpc.GRPCInferenceServiceStub(channel)
    request = oip.ModelInferRequest(model_name=MODEL_NAME, inputs=[
        oip.ModelInferRequest.InferInputTensor(name="ct_volume", datatype="FP32",
                                               shape=list(x.shape))])
    request.raw_input_contents.append(x.astype("<f4").tobytes())

    def call() -> np.ndarray:
        response = stub.ModelInfer(request, timeout=300)
        return np.frombuffer(response.raw_output_contents[0], "<f4")
    return call


def _wait_ready(channel: grpc.Channel, x: np.ndarray) -> None:
    call = _infer_call(channel, x)
    for _ in range(600):
        try:
            call()
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            time.sleep(0.1)
    raise RuntimeError("inference server never became ready")


def _throughput(target: str, tls: TLSFiles, x: np.ndarray, per_client: int) -> float:
    """Studies per second with CLIENTS concurrent clients, each on its own channel."""
    channels = [secure_channel(target, tls) for _ in range(CLIENTS)]
    calls = [_infer_call(c, x) for c in channels]
    for call in calls:
        call()

    def client(call: Callable[[], np.ndarray]) -> None:
        for _ in range(per_client):
            call()

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, calls))
    elapsed = time.perf_counter() - started
    for channel in channels:
        channel.close()
    return CLIENTS * per_client / elapsed


def run(quick: bool) -> list[str]:
    """Measure and print; returns the summary lines."""
    torch.set_num_threads(1)
    preset, size = "cpu-small", (32, 32)
    reps, per_client, rounds = (6, 2, 1) if quick else (20, 3, 3)
    config = PreprocessConfig(size=size)
    with tempfile.TemporaryDirectory(prefix="ucadi-bench-inference-") as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        model = build_model("densenet3d", preset, num_classes=2).eval()
        save_checkpoint(work / "model", model,
                        ModelCard.for_model(model, ["non_covid", "covid"], config.to_dict(),
                                            version=1))
        plan = next(p for p in plan_cohort("tiny", seed=0) if p.label == "covid")
        record = generate_case(plan, "tiny", 0, work / "cohort")
        study = work / "cohort" / str(record["series_path"])
        x = preprocess_study(study, config, samples=SAMPLES, seed=0)[:, None].copy()
        create_ca(work / "ca", "bench-ca")
        server_tls = issue_certificate(work / "ca", work / "server", "inference", "service")
        client_tls = issue_certificate(work / "ca", work / "client", "bench", "operator")

        def in_process() -> np.ndarray:
            with torch.inference_mode():
                return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()

        def in_process_ct() -> np.ndarray:
            tensor = preprocess_study(study, config, samples=SAMPLES, seed=0)
            with torch.inference_mode():
                return torch.softmax(model(torch.from_numpy(tensor[:, None])), dim=1).numpy()

        print(f"model densenet3d/{preset}, study {x.shape[0]} samplings x {tuple(x.shape[1:])}, "
              f"{reps} repeats, {rounds} rounds of {CLIENTS} clients x {per_client} requests, "
              "mutual TLS")
        # Both servers run side by side and are measured in alternating rounds, so that
        # load from other processes on the machine falls on both alike. The unbatched one runs
        # one request per forward pass (a request larger than --max-batch runs alone).
        with _server(work / "model", server_tls.ca.parent, work) as target, \
                _server(work / "model", server_tls.ca.parent, work, "--max-batch", "1",
                        "--max-delay-ms", "0") as unbatched_target:
            with secure_channel(unbatched_target, client_tls) as channel:
                _wait_ready(channel, x)
            channel = secure_channel(target, client_tls)
            _wait_ready(channel, x)
            remote = _infer_call(channel, x)
            np.testing.assert_allclose(remote().reshape(-1, 2), in_process(), atol=1e-5)
            local_s, remote_s, local_ct_s, remote_ct_s = [], [], [], []
            for _ in range(reps):
                for fn, out in ((in_process, local_s), (remote, remote_s),
                                (in_process_ct, local_ct_s),
                                (lambda: diagnose(channel, study), remote_ct_s)):
                    started = time.perf_counter()
                    fn()
                    out.append(time.perf_counter() - started)
            channel.close()
            rates: dict[str, list[float]] = {"batched": [], "unbatched": [], "batched_one": [],
                                             "unbatched_one": []}
            for _ in range(rounds):
                for name, where, tensor in (("batched", target, x),
                                            ("unbatched", unbatched_target, x),
                                            ("batched_one", target, x[:1]),
                                            ("unbatched_one", unbatched_target, x[:1])):
                    rates[name].append(_throughput(where, client_tls, tensor, per_client))
        batched, unbatched, batched_one, unbatched_one = (
            statistics.median(rates[name]) for name in ("batched", "unbatched", "batched_one",
                                                        "unbatched_one"))

    local_ms, remote_ms = _median_ms(local_s), _median_ms(remote_s)
    local_ct_ms, remote_ct_ms = _median_ms(local_ct_s), _median_ms(remote_ct_s)
    overhead = remote_ms / local_ms
    gain = batched / unbatched
    print(f"per study, tensor path:  in-process {local_ms:8.1f} ms   ModelInfer {remote_ms:8.1f} ms"
          f"   ratio {overhead:.2f}x (goal <= {OVERHEAD_GOAL}x)")
    print(f"per study, CT-native:    in-process {local_ct_ms:8.1f} ms   Diagnose   "
          f"{remote_ct_ms:8.1f} ms   ratio {remote_ct_ms / local_ct_ms:.2f}x "
          "(upload + preprocess + predict)")
    print(f"throughput, {CLIENTS} clients: batched {batched:.2f} studies/s, unbatched "
          f"{unbatched:.2f} studies/s, ratio {gain:.2f}x (goal >= {BATCHING_GOAL}x)")
    print(f"throughput, {CLIENTS} clients sending one sampling per request: batched "
          f"{batched_one:.2f} requests/s, unbatched {unbatched_one:.2f} requests/s, ratio "
          f"{batched_one / unbatched_one:.2f}x")
    overhead_met = "met" if overhead <= OVERHEAD_GOAL else "NOT met"
    return [
        f"ModelInfer latency {remote_ms:.1f} ms vs in-process {local_ms:.1f} ms: "
        f"{overhead:.2f}x (goal <= {OVERHEAD_GOAL}x: {overhead_met})",
        f"Diagnose (CT-native) {remote_ct_ms:.1f} ms vs in-process preprocess+predict "
        f"{local_ct_ms:.1f} ms: {remote_ct_ms / local_ct_ms:.2f}x",
        f"{CLIENTS}-client throughput batched {batched:.2f} vs unbatched {unbatched:.2f} "
        f"studies/s: {gain:.2f}x (goal >= {BATCHING_GOAL}x: "
        f"{'met' if gain >= BATCHING_GOAL else 'NOT met'})",
        f"{CLIENTS}-client throughput, 1 sampling per request: batched {batched_one:.2f} vs "
        f"unbatched {unbatched_one:.2f} requests/s: {batched_one / unbatched_one:.2f}x",
    ]
