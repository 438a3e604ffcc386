"""`ucadi pki`: create the federation CA, issue certificates, assemble a site's startup kit."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from ucadi.ops.pki import ROLES, create_ca, issue_certificate

ENDPOINTS_FILE = "endpoints.yaml"


def make_startup_kit(ca_dir: Path, out_dir: Path, site: str, endpoints: dict[str, str]) -> Path:
    """A hospital's startup kit: its certificate and key, the CA, and the central endpoints."""
    issue_certificate(ca_dir, out_dir, site, "site")
    (out_dir / ENDPOINTS_FILE).write_text(yaml.safe_dump({"site": site, **endpoints},
                                                         sort_keys=True))
    return out_dir


def _init(args: argparse.Namespace) -> int:
    out = create_ca(Path(args.out), args.name)
    print(f"federation CA written to {out} (keep ca.key offline; distribute ca.crt)")
    return 0


def _issue(args: argparse.Namespace) -> int:
    files = issue_certificate(Path(args.ca), Path(args.out), args.name, args.role,
                              hostnames=tuple(["localhost", *args.host]),
                              ips=tuple(["127.0.0.1", *args.ip]))
    print(f"{args.role} certificate for {args.name!r}: {files.cert} (key {files.key})")
    return 0


def _kit(args: argparse.Namespace) -> int:
    endpoints = {"aggregator": args.aggregator, "crypto": args.crypto}
    out = make_startup_kit(Path(args.ca), Path(args.out), args.site, endpoints)
    print(f"startup kit for site {args.site!r} in {out}")
    if args.k8s_secret:
        from ucadi.ops.k8s import startup_kit_secret

        manifest = startup_kit_secret(out, name=args.secret_name or f"ucadi-{args.site}-tls",
                                      namespace=args.namespace)
        Path(args.k8s_secret).write_text(yaml.safe_dump(manifest, sort_keys=False))
        print(f"Kubernetes Secret manifest written to {args.k8s_secret} "
              f"(kubectl apply -f {args.k8s_secret})")
    if args.json:
        print(json.dumps({"kit": str(out), **endpoints}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ucadi pki init|issue|kit`."""
    pki = sub.add_parser("pki", help="federation CA and certificates")
    cmds = pki.add_subparsers(dest="pki_command", metavar="ACTION", required=True)
    init = cmds.add_parser("init", help="create the federation CA")
    init.add_argument("--out", required=True, help="folder for ca.crt and ca.key")
    init.add_argument("--name", default="ucadi-federation-ca", help="CA common name")
    init.set_defaults(func=_init)
    issue = cmds.add_parser("issue", help="issue a certificate for a service, site or person")
    issue.add_argument("--ca", required=True, help="CA folder (from `ucadi pki init`)")
    issue.add_argument("--name", required=True, help="identity, e.g. aggregator or main-campus")
    issue.add_argument("--role", required=True, choices=ROLES)
    issue.add_argument("--out", required=True, help="folder for ca.crt, tls.crt, tls.key")
    issue.add_argument("--host", action="append", default=[], help="extra DNS name (repeatable)")
    issue.add_argument("--ip", action="append", default=[], help="extra IP address (repeatable)")
    issue.set_defaults(func=_issue)
    kit = cmds.add_parser("kit", help="a site's startup kit (certificate, CA, endpoints)")
    kit.add_argument("--ca", required=True)
    kit.add_argument("--site", required=True, help="site name, e.g. main-campus")
    kit.add_argument("--out", required=True)
    kit.add_argument("--aggregator", required=True, help="aggregator HOST:PORT")
    kit.add_argument("--crypto", required=True, help="crypto service HOST:PORT")
    kit.add_argument("--k8s-secret", help="also write the kit as a Kubernetes Secret manifest")
    kit.add_argument("--secret-name", help="Secret name (default ucadi-<site>-tls)")
    kit.add_argument("--namespace", default="default")
    kit.add_argument("--json", action="store_true", help="print a JSON summary")
    kit.set_defaults(func=_kit)
