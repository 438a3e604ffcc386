"""`ucadi diagnose PATH --server HOST:PORT`: send a CT study to a site's inference server.

The study (a DICOM folder or file, a zip of DICOM files, or a NIfTI volume) streams in chunks;
the answer is printed as a table, and the Grad-CAM montage is written as a PNG when asked.
`diagnose()` is the same call for Python code.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np

from ucadi.errors import UcadiError
from ucadi.v1 import inference_pb2, inference_pb2_grpc
from ucadi.wire.chunks import DEFAULT_CHUNK_BYTES, iter_file_chunks

NIFTI_SUFFIXES = (".nii", ".nii.gz")
DEFAULT_TIMEOUT_S = 300.0
# Client-side receive limit: a paper-size heatmap (16x128x128 float16) plus its PNG.
MAX_RESPONSE_BYTES = 64 << 20


class DiagnoseError(UcadiError):
    """The server refused or failed the diagnosis; the message is the server's."""


def study_format(path: Path) -> int:
    """The StudyFormat of a local study path."""
    formats = inference_pb2.StudyFormat
    if path.is_dir():
        return formats.STUDY_FORMAT_DICOM_FILES
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return formats.STUDY_FORMAT_NIFTI
    if path.suffix.lower() == ".zip":
        return formats.STUDY_FORMAT_ZIP
    return formats.STUDY_FORMAT_DICOM_FILES


def study_files(path: Path) -> list[tuple[str, Path]]:
    """(name sent, local file) of every file of a study, in a stable order."""
    path = Path(path)
    if not path.exists():
        raise DiagnoseError(f"{path} does not exist; give a DICOM folder or file, a zip or a "
                            "NIfTI volume")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if not files:
            raise DiagnoseError(f"{path} holds no files")
        return [(p.relative_to(path).as_posix(), p) for p in files]
    return [(path.name, path)]


def iter_requests(path: Path, options: inference_pb2.DiagnoseOptions,
                  chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                  on_bytes: Callable[[int], None] | None = None
                  ) -> Iterator[inference_pb2.DiagnoseRequest]:
    """The Diagnose stream: options first, then every file's chunks."""
    yield inference_pb2.DiagnoseRequest(options=options)
    for name, local in study_files(path):
        for chunk in iter_file_chunks(local, chunk_bytes):
            yield inference_pb2.DiagnoseRequest(
                file=inference_pb2.StudyFileChunk(name=name, chunk=chunk))
            if on_bytes is not None:
                on_bytes(len(chunk.data))


def diagnose(channel: grpc.Channel, path: Path, *, samples: int = 5, seed: int = 0,
             want_heatmap: bool = False, series_uid: str = "",
             timeout: float | None = DEFAULT_TIMEOUT_S,
             on_bytes: Callable[[int], None] | None = None) -> inference_pb2.DiagnoseResponse:
    """Diagnose the study at `path` on the server behind `channel`."""
    path = Path(path)
    options = inference_pb2.DiagnoseOptions(samples=samples, want_heatmap=want_heatmap,
                                            series_uid=series_uid, format=study_format(path),
                                            seed=seed)
    stub = inference_pb2_grpc.DiagnosisServiceStub(channel)
    return stub.Diagnose(iter_requests(path, options, on_bytes=on_bytes), timeout=timeout)


def heatmap_array(response: inference_pb2.DiagnoseResponse) -> np.ndarray:
    """The response's Grad-CAM heatmap as a float32 array (16, H, W)."""
    if not response.HasField("heatmap"):
        raise DiagnoseError("the response carries no heatmap (ask with want_heatmap)")
    heatmap = response.heatmap
    values = np.frombuffer(heatmap.data, dtype=np.dtype(heatmap.dtype).newbyteorder("<"))
    return values.reshape(tuple(heatmap.shape)).astype(np.float32)


def response_summary(response: inference_pb2.DiagnoseResponse) -> dict[str, object]:
    """The answer as plain JSON-friendly data."""
    return {
        "predicted_class": response.predicted_class,
        "covid_probability": round(response.covid_probability, 6),
        "probabilities": {p.class_name: round(p.probability, 6) for p in response.probabilities},
        "model_version": response.model_version,
        "model": f"{response.card.arch}/{response.card.preset}",
        "samples": response.samples,
        "slices": response.study.slices,
        "series_uid": response.study.series_uid,
    }


def print_table(response: inference_pb2.DiagnoseResponse, source: Path) -> None:
    """Print the diagnosis as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Diagnosis of {source.name}")
    table.add_column("class")
    table.add_column("probability", justify="right")
    for entry in response.probabilities:
        mark = " <" if entry.class_name == response.predicted_class else ""
        table.add_row(entry.class_name + mark, f"{entry.probability:.4f}")
    console = Console()
    console.print(table)
    console.print(f"predicted: [bold]{response.predicted_class}[/bold]   COVID-19 probability: "
                  f"{response.covid_probability:.4f}")
    console.print(f"model {response.card.arch}/{response.card.preset} version "
                  f"{response.model_version}; {response.samples} samplings of "
                  f"{response.study.slices} slices")


def open_channel(server: str, tls_dir: Path | None, *, ca_file: Path | None = None,
                 token: str | None = None) -> grpc.Channel:
    """A channel to the server: mutual TLS with a TLS folder (a startup kit, or a certificate
    from the site-local CA), server-only TLS with `ca_file` and a bearer `token`, or plaintext."""
    options = [("grpc.max_receive_message_length", MAX_RESPONSE_BYTES)]
    if ca_file is not None:
        if not token:
            raise DiagnoseError("server-only TLS (--ca-file) needs a bearer token "
                                "(--token-file) to identify this client")
        credentials = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes()),
            grpc.access_token_call_credentials(token))
        return grpc.secure_channel(server, credentials, options=options)
    if tls_dir is None:
        return grpc.insecure_channel(server, options=options)
    from ucadi.ops.tls import TLSFiles, secure_channel

    return secure_channel(server, TLSFiles.from_dir(tls_dir), options=tuple(options))


def read_token(path: Path) -> str:
    """The bearer token in a file (surrounding whitespace removed)."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise DiagnoseError(f"cannot read the token file {path}: {exc}") from None
    if not token:
        raise DiagnoseError(f"the token file {path} is empty")
    return token


def run_diagnose(args: argparse.Namespace) -> int:
    """Handler of `ucadi diagnose`."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    path = Path(args.path)
    total = sum(local.stat().st_size for _, local in study_files(path))
    want_heatmap = args.heatmap is not None or args.heatmap_array is not None
    token = read_token(args.token_file) if args.token_file is not None else None
    with open_channel(args.server, None if args.insecure else args.tls_dir,
                      ca_file=args.ca_file, token=token) as channel, \
            Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                     TransferSpeedColumn(), transient=True) as progress:
        task = progress.add_task("uploading study", total=total)
        try:
            response = diagnose(channel, path, samples=args.samples, seed=args.seed,
                                want_heatmap=want_heatmap, series_uid=args.series_uid,
                                timeout=args.timeout,
                                on_bytes=lambda n: progress.advance(task, n))
        except grpc.RpcError as exc:
            raise DiagnoseError(f"server {args.server} answered {exc.code().name}: "
                                f"{exc.details()}") from None
    if args.json:
        print(json.dumps(response_summary(response), indent=2))
    else:
        print_table(response, path)
    if args.heatmap is not None:
        args.heatmap.write_bytes(response.heatmap.png)
        print(f"heatmap montage written to {args.heatmap}")
    if args.heatmap_array is not None:
        np.save(args.heatmap_array, heatmap_array(response))
        print(f"heatmap array {list(response.heatmap.shape)} written to {args.heatmap_array}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `diagnose` command."""
    parser = subparsers.add_parser(
        "diagnose", help="send a CT study to an inference server",
        description="Stream a chest CT study to a site's inference server and print the "
                    "diagnosis (5-sampling average, predicted class, COVID-19 probability).")
    parser.add_argument("path", type=Path, help="DICOM folder or file, zip, or NIfTI volume")
    parser.add_argument("--server", required=True, help="HOST:PORT of the inference server")
    security = parser.add_mutually_exclusive_group(required=True)
    security.add_argument("--tls-dir", type=Path, metavar="DIR",
                          help="startup kit folder with ca.crt, tls.crt, tls.key (mutual TLS)")
    security.add_argument("--ca-file", type=Path, metavar="PEM",
                          help="server-only TLS trusting this CA, with --token-file (a server "
                               "in clients.mode token)")
    security.add_argument("--insecure", action="store_true",
                          help="plaintext, for a server started with --insecure")
    parser.add_argument("--token-file", type=Path, metavar="FILE",
                        help="file holding an OIDC bearer token (JWT) sent with the request")
    parser.add_argument("--samples", type=int, default=5,
                        help="samplings averaged (the papers use 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the slice sampling")
    parser.add_argument("--series-uid", default="", help="series to use when there are several")
    parser.add_argument("--heatmap", type=Path, metavar="PNG",
                        help="write the Grad-CAM montage here")
    parser.add_argument("--heatmap-array", type=Path, metavar="NPY",
                        help="write the Grad-CAM heatmap (16, H, W) float32 here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="deadline of the request in seconds")
    parser.set_defaults(func=run_diagnose)
