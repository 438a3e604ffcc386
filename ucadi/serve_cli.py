"""`ucadi serve <service>`: run one of the gRPC services in this process.

Each service module exposes `add_arguments(parser)` and either `run_from_args(args) -> int`
(it runs until stopped) or `from_args(args) -> RunningServer` (started here, then served until
SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import importlib

from ucadi.ops.logs import LOG_FORMATS, LOG_LEVELS, setup_logging
from ucadi.ops.memory import tune_allocator
from ucadi.ops.serving import wait_for_stop_signal
from ucadi.ops.tracing import setup_tracing

SERVICES = {
    "aggregator": ("services.aggregator.server", "central: rounds, membership, encrypted FedAvg"),
    "crypto": ("services.crypto.server", "central: key service (wrapped keys) + ciphertext sum"),
    "trainer": ("services.trainer.server", "site: local training, encrypt/decrypt, status"),
    "inference": ("services.inference.server", "site: Open Inference Protocol + CT diagnosis"),
}


def _run(args: argparse.Namespace) -> int:
    # Before the service's own logging.basicConfig, which then leaves this handler in place.
    setup_logging(args.service, args.log_level, args.log_format)
    tune_allocator()  # before the service allocates its first round's buffers
    module = importlib.import_module(SERVICES[args.service][0])
    if hasattr(module, "run_from_args"):
        return int(module.run_from_args(args))
    setup_tracing(f"ucadi-{args.service}")
    running = module.from_args(args)
    wait_for_stop_signal()
    running.stop(2.0)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ucadi serve aggregator|crypto|trainer|inference`."""
    serve = sub.add_parser("serve", help="run a service")
    services = serve.add_subparsers(dest="service", metavar="SERVICE", required=True)
    for name, (module, description) in SERVICES.items():
        parser = services.add_parser(name, help=description, description=description)
        importlib.import_module(module).add_arguments(parser)
        parser.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                            help="least severe log records written (default: info)")
        parser.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                            help="text lines, or one JSON object per line for a log pipeline "
                                 "(default: text)")
        parser.set_defaults(func=_run)
