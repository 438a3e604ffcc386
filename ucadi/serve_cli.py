"""`ucadi serve <service>`: run one of the gRPC services in this process.

Each service module exposes `add_arguments(parser)` and either `run_from_args(args) -> int`
(it runs until stopped) or `from_args(args) -> RunningServer` (started here, then served until
SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from ucadi.ops.config import describe_config, load_config
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


# Where each service keeps DEFAULTS and FLAG_SETTINGS (flag -> the setting it overrides).
SETTINGS_MODULES = {"aggregator": "services.aggregator.server", "crypto": "services.crypto.server",
                    "trainer": "services.trainer.server",
                    "inference": "services.inference.settings"}


def effective_config(args: argparse.Namespace) -> list[str]:
    """The service's configuration as it would run: defaults, the config file, UCADI_*
    environment overrides and flags, each setting annotated with where it came from."""
    module = importlib.import_module(SETTINGS_MODULES[args.service])
    sources: dict[str, str] = {}
    config = load_config(module.DEFAULTS, getattr(args, "config", None), sources=sources)
    for flag, (section, key) in module.FLAG_SETTINGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            config[section][key] = str(value) if isinstance(value, Path) else value
            sources[f"{section}.{key}"] = f"flag --{flag.replace('_', '-')}"
    if hasattr(module, "complete_config"):  # settings found elsewhere (the trainer's kit)
        module.complete_config(config, sources)
    return describe_config(config, sources)


def _run(args: argparse.Namespace) -> int:
    if args.print_config:
        print("\n".join(effective_config(args)))
        return 0
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
        parser.add_argument("--print-config", action="store_true",
                            help="print the effective configuration, each setting with its "
                                 "source (default, file, environment, flag), and exit")
        parser.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                            help="least severe log records written (default: info)")
        parser.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                            help="text lines, or one JSON object per line for a log pipeline "
                                 "(default: text)")
        parser.set_defaults(func=_run)
