"""`ucadi health`: ask running services whether they serve (grpc.health.v1), as the charts'
`helm test` hook and an operator at a shell do; exit 0 when every one answers SERVING."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ucadi.errors import CommandError, UcadiError
from ucadi.ops.serving import split_address
from ucadi.ops.tls import TLSFiles, secure_channel


class UsageError(CommandError):
    """A target that is not HOST:PORT[=SERVICE]."""


def parse_target(text: str) -> tuple[str, str]:
    """'host:port=service' -> ('host:port', 'service'); no '=service' checks the whole server."""
    address, _, service = text.partition("=")
    try:
        split_address(address)
    except UcadiError as exc:
        raise UsageError(f"target {text!r} is not HOST:PORT[=SERVICE] "
                         "(e.g. aggregator:9101=ucadi.v1.FederationService)") from exc
    return address, service


def check(address: str, service: str, tls: TLSFiles | None, timeout_s: float) -> str:
    """The serving status name of `service` at `address`, or the gRPC error's code name."""
    channel = (secure_channel(address, tls) if tls is not None
               else grpc.insecure_channel(address))
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s,
                wait_for_ready=True)
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _health_command(args: argparse.Namespace) -> int:
    targets = [parse_target(text) for text in args.targets]
    tls = TLSFiles.from_dir(Path(args.tls_dir)) if args.tls_dir else None
    failed = 0
    for address, service in targets:
        status = check(address, service, tls, args.timeout)
        print(f"{address} {service or '(server)'} {status}")
        failed += status != "SERVING"
    if failed:
        print(f"ucadi health: {failed} of {len(targets)} not serving", file=sys.stderr)
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `ucadi health`."""
    parser = subparsers.add_parser(
        "health", help="check services' gRPC health (exit 1 if any is not serving)",
        description="Check each target's grpc.health.v1 status; print one line per target; "
                    "exit 0 when all are SERVING, 1 otherwise.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("targets", nargs="+", metavar="HOST:PORT[=SERVICE]",
                        help="a health port (9101 in the charts, plaintext) and the service "
                             "name to check; without =SERVICE the whole server")
    parser.add_argument("--tls-dir", help="mutual TLS with this kit (ca.crt, tls.crt, tls.key), "
                                          "for a service's main port instead of its health port")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for each target")
    parser.set_defaults(func=_health_command)
