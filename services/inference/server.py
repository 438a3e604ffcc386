"""The inference service's gRPC glue: Open Inference Protocol + CT-native Diagnose, and bootstrap.

Servicers only validate, call the domain modules beside this one and map `UcadiError`s to
status codes (each error class carries its code). `ucadi serve inference` calls
`add_arguments` / `run_from_args`.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch
from grpc_health.v1 import health_pb2

import ucadi
from services.inference.batching import DynamicBatcher
from services.inference.callers import CallerGate
from services.inference.diagnosis import Diagnosis, check_samples, diagnose_study, montage_png
from services.inference.metrics import observed
from services.inference.model_store import ModelStore, ModelUnavailableError, ServedModel
from services.inference.settings import (
    ServiceConfig,
    add_arguments,
    config_from_args,
    settings_from_args,
)
from services.inference.tensors import (
    check_requested_outputs,
    decode_input,
    encode_output,
    tensor_metadata,
)
from services.inference.upload import (
    StudySlots,
    UploadFormatError,
    check_slice_limit,
    receive_study,
    study_path,
)
from services.inference.web.https import WebServer
from services.inference.web.settings import WebSettings, web_settings
from ucadi.errors import UcadiError
from ucadi.ops.serving import RunningServer, serve, wait_for_stop_signal
from ucadi.ops.tls import TLSFiles
from ucadi.ops.tracing import setup_tracing
from ucadi.v1 import inference_pb2, inference_pb2_grpc, open_inference_pb2, open_inference_pb2_grpc

log = logging.getLogger(__name__)

SERVER_NAME = "ucadi-inference"
PLATFORM = "pytorch_safetensors"
OIP_SERVICE = "inference.GRPCInferenceService"
DIAGNOSIS_SERVICE = "ucadi.v1.DiagnosisService"
# ModelInfer carries whole tensors in one message: 64 MiB holds 12 paper-size studies x 5.
MAX_MESSAGE_BYTES = 64 << 20
HEATMAP_DTYPE = "float16"


class UnknownModelError(UcadiError):
    """The request names a model or version this server does not serve."""

    status = "NOT_FOUND"


class ModelChangedError(UcadiError):
    """A new model version with a different input size was loaded while the request waited."""

    status = "UNAVAILABLE"


class InferenceService:
    """The model store, the batcher and both servicers of one inference server."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.store = ModelStore(config.model_dir, config.device, config.poll_interval_s,
                                on_change=self._model_loaded)
        self.batcher: DynamicBatcher[ServedModel] = DynamicBatcher(self._run_batch,
                                                                   config.batching)
        self.study_slots = StudySlots(config.limits.max_concurrent_studies)
        self.gate = CallerGate(config.callers, None)
        self.running: RunningServer | None = None
        self.web: WebServer | None = None

    def _run_batch(self, rows: np.ndarray) -> tuple[np.ndarray, ServedModel]:
        served = self.store.current()
        if tuple(rows.shape[1:]) != served.input_shape:
            raise ModelChangedError(
                f"model version {served.version} takes {list(served.input_shape)} per sampling "
                f"but this request was prepared as {list(rows.shape[1:])}; send it again")
        return served.predict(torch.from_numpy(rows)).numpy(), served

    def _model_loaded(self, served: ServedModel) -> None:
        if self.running is not None:
            for name in (OIP_SERVICE, DIAGNOSIS_SERVICE):
                self.running.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def deadline(self, context: grpc.ServicerContext) -> float:
        """Monotonic deadline of a call: the client's, capped by the server's request timeout."""
        remaining = context.time_remaining()
        budget = self.config.request_timeout_s if remaining is None else min(
            remaining, self.config.request_timeout_s)
        return time.monotonic() + budget

    def register(self, server: grpc.Server) -> None:
        """Add both servicers to a gRPC server."""
        open_inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            OpenInferenceServicer(self), server)
        inference_pb2_grpc.add_DiagnosisServiceServicer_to_server(DiagnosisServicer(self), server)

    def start(self, *, address: str = "127.0.0.1:0", tls: TLSFiles | None,
              metrics_address: str | None = "127.0.0.1:0",
              port_file: Path | None = None,
              health_address: str | None = None) -> RunningServer:
        """Serve on `address`; health says NOT_SERVING until a model is loaded.

        With `tls`, callers are admitted by the config's caller policy (callers.py).
        """
        self.gate = CallerGate(self.config.callers, None if tls is None else tls.ca.read_bytes())
        self.running = serve(self.register, service_names=[OIP_SERVICE, DIAGNOSIS_SERVICE],
                             address=address, tls=tls, metrics_address=metrics_address,
                             max_message_bytes=MAX_MESSAGE_BYTES, port_file=port_file,
                             health_address=health_address,
                             require_client_auth=self.config.callers.require_client_certificate,
                             client_ca=self.gate.client_ca_pem())
        for name in (OIP_SERVICE, DIAGNOSIS_SERVICE):
            self.running.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.store.start()
        return self.running

    def diagnose_received(self, files: list[Path], folder: Path, study_format: int, *,
                          samples: int, seed: int = 0, series_uid: str = "",
                          want_heatmap: bool = False, deadline: float | None = None
                          ) -> Diagnosis:
        """Diagnose a study received into `folder` (Diagnose's and the web page's path).

        Call with a study slot held. Errors name the files as the client sent them, never the
        server's private upload folder.
        """
        limits = self.config.limits
        served_now = self.store.current()
        try:
            path = study_path(files, folder, study_format)
            check_slice_limit(path, study_format, limits)
            return diagnose_study(path, self.batcher, served_now=served_now, samples=samples,
                                  seed=seed, series_uid=series_uid or None,
                                  want_heatmap=want_heatmap, max_slices=limits.max_slices,
                                  deadline=deadline)
        except UcadiError as exc:
            exc.args = (str(exc).replace(f"{folder}/", "").replace(str(folder), "the upload"),)
            raise

    def start_web(self, settings: WebSettings) -> WebServer:
        """Serve the radiologist's HTTPS page (services/inference/web) beside the gRPC ports."""
        from services.inference.web.app import WebPage

        self.web = WebServer(WebPage(self, settings).app(), settings).start()
        return self.web

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving, let in-flight calls finish within `grace`, stop the workers."""
        if self.web is not None:
            self.web.stop()
        if self.running is not None:
            self.running.stop(grace)
        self.batcher.stop()
        self.store.stop()


class OpenInferenceServicer(open_inference_pb2_grpc.GRPCInferenceServiceServicer):
    """KServe v2 / Open Inference Protocol over the served model."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service

    def _served(self, name: str, version: str) -> ServedModel:
        if name != self.service.config.model_name:
            raise UnknownModelError(f"no model named {name!r}; this server serves "
                                    f"{self.service.config.model_name!r}")
        served = self.service.store.current()
        if version and version != served.version:
            raise UnknownModelError(f"model {name!r} version {version!r} is not served; the "
                                    f"current version is {served.version!r} (or leave it empty)")
        return served

    @observed("ServerLive")
    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Liveness: answering at all means live."""
        return open_inference_pb2.ServerLiveResponse(live=True)

    @observed("ServerReady")
    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Readiness: a model is loaded."""
        return open_inference_pb2.ServerReadyResponse(ready=self.service.store.ready)

    @observed("ModelReady")
    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Whether the named model (and version) is loaded."""
        try:
            self._served(request.name, request.version)
        except (UnknownModelError, ModelUnavailableError):
            return open_inference_pb2.ModelReadyResponse(ready=False)
        return open_inference_pb2.ModelReadyResponse(ready=True)

    @observed("ServerMetadata")
    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Server name and version; no protocol extensions."""
        return open_inference_pb2.ServerMetadataResponse(
            name=SERVER_NAME, version=getattr(ucadi, "__version__", "0.1.0"), extensions=[])

    @observed("ModelMetadata")
    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        """The served model's version, input and output tensors."""
        served = self._served(request.name, request.version)
        inputs, outputs = tensor_metadata(served.input_shape, len(served.class_names))
        return open_inference_pb2.ModelMetadataResponse(
            name=self.service.config.model_name, versions=[served.version], platform=PLATFORM,
            inputs=[inputs], outputs=[outputs])

    @observed("ModelInfer")
    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Class probabilities for preprocessed studies [batch, 1, 16, H, W]."""
        served = self._served(request.model_name, request.model_version)
        check_requested_outputs(request)
        rows = decode_input(request, served.input_shape,
                            max_batch_rows=self.service.config.max_request_rows)
        result = self.service.batcher.run(rows, self.service.deadline(context))
        response = open_inference_pb2.ModelInferResponse(
            model_name=self.service.config.model_name, model_version=result.tag.version,
            id=request.id)
        encode_output(response, result.outputs, result.tag.class_names)
        return response


def _study_files(requests: Iterator[inference_pb2.DiagnoseRequest]
                 ) -> Iterator[inference_pb2.StudyFileChunk]:
    for request in requests:
        if request.WhichOneof("item") != "file":
            raise UploadFormatError("only the first Diagnose message may carry options; every "
                                    "later one must be a file chunk")
        yield request.file


def to_response(diagnosis: Diagnosis, upload_bytes: int) -> inference_pb2.DiagnoseResponse:
    """The protobuf answer for one diagnosis."""
    served = diagnosis.served
    card = served.card
    response = inference_pb2.DiagnoseResponse(
        predicted_class=diagnosis.predicted_class,
        covid_probability=diagnosis.covid_probability, model_version=served.version,
        samples=int(diagnosis.sample_probabilities.shape[0]),
        sample_probabilities=diagnosis.sample_probabilities.ravel().tolist(),
        card=inference_pb2.ModelCardSummary(
            arch=card.arch, preset=card.preset, class_names=list(served.class_names),
            input_shape=list(served.input_shape), card_json=_card_json(card)),
        study=inference_pb2.StudySummary(
            slices=diagnosis.study.slices, spacing_mm=list(diagnosis.study.spacing_mm),
            series_uid=diagnosis.study.series_uid, upload_bytes=upload_bytes))
    for name, probability in zip(served.class_names, diagnosis.probabilities, strict=True):
        response.probabilities.add(class_name=name, probability=float(probability))
    if diagnosis.heatmap is not None:
        heatmap = diagnosis.heatmap.astype(HEATMAP_DTYPE)
        title = (f"Grad-CAM for {diagnosis.predicted_class} "
                 f"(p={diagnosis.probabilities.max():.3f}, model {served.version})")
        response.heatmap.CopyFrom(inference_pb2.Heatmap(
            shape=list(heatmap.shape), dtype=HEATMAP_DTYPE,
            data=heatmap.astype(f"<{heatmap.dtype.str[1:]}").tobytes(),
            png=montage_png(diagnosis.sampled_ct, diagnosis.heatmap, diagnosis.heatmap_slices,
                            title),
            slice_indices=[int(i) for i in diagnosis.heatmap_slices]))
    return response


def _card_json(card: Any) -> str:
    import json

    return json.dumps(card.to_dict(), sort_keys=True)


class DiagnosisServicer(inference_pb2_grpc.DiagnosisServiceServicer):
    """CT-native diagnosis of a streamed study."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service
        self.slots = service.study_slots

    @observed("Diagnose")
    def Diagnose(self, request_iterator: Iterator[inference_pb2.DiagnoseRequest],
                 context: grpc.ServicerContext) -> inference_pb2.DiagnoseResponse:
        """Receive the study, preprocess it with the card's pipeline, predict, explain."""
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("item") != "options":
            raise UploadFormatError("the first Diagnose message must carry the options")
        options = first.options
        samples = check_samples(options.samples)
        self.service.store.current()  # no model yet: UNAVAILABLE before any upload
        with self.slots.admit(), tempfile.TemporaryDirectory(prefix="ucadi-study-") as folder:
            files, upload_bytes = receive_study(_study_files(request_iterator), Path(folder),
                                                self.service.config.limits)
            diagnosis = self.service.diagnose_received(
                files, Path(folder), options.format, samples=samples, seed=options.seed,
                series_uid=options.series_uid, want_heatmap=options.want_heatmap,
                deadline=self.service.deadline(context))
        return to_response(diagnosis, upload_bytes)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the inference server until SIGTERM or Ctrl-C; returns the exit code."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s inference %(levelname)s %(message)s")
    settings = settings_from_args(args)
    server = settings["server"]
    tls = TLSFiles.from_dir(Path(server["tls_dir"])) if server["tls_dir"] else None
    setup_tracing("ucadi-inference")
    config = config_from_args(args)
    service = InferenceService(config)
    running = service.start(address=server["address"], tls=tls,
                            metrics_address=server["metrics_address"] or None,
                            port_file=args.port_file,
                            health_address=server["health_address"] or None)
    print(f"inference: serving {config.model_dir} on {running.target} "
          f"({'plaintext' if tls is None else config.callers.mode}), metrics port "
          f"{running.metrics_port}", flush=True)
    web = web_settings(settings, config.callers.tokens)
    if web is not None:
        page = service.start_web(web)
        print(f"inference: radiologist's page on {page.url} (auth {web.auth})", flush=True)
    wait_for_stop_signal()
    service.stop(grace=5.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m services.inference.server ...` (what `ucadi serve inference` runs)."""
    parser = argparse.ArgumentParser(prog="ucadi serve inference", description=__doc__)
    add_arguments(parser)
    try:
        return run_from_args(parser.parse_args(argv))
    except UcadiError as exc:
        print(f"ucadi serve inference: error: {exc}", flush=True)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
