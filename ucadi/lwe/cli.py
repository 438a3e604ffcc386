"""`ucadi keys`: the key custodian's and sites' key commands.

Custodian:  keys create --out DIR          new LWE secret (kept by the custodian only), and the
                                           custodian's Ed25519 signing key if DIR has none
            keys custodian-init --out DIR  the signing key alone (a folder from before it)
            keys pin --site S --fingerprint F --pins FILE
                                           pin a site's key fingerprint, heard from the site
            keys wrap --secret FILE ...    wrap it for registered, pinned sites, upload, activate
            keys rotate --out DIR ...      new secret + key id, wrapped and activated
            keys approve-key --site S --fingerprint F ...
                                           let a site replace its key (and re-pin it)
Site:       keys site-init --out DIR       X25519 key pair; prints the fingerprint to read out
            keys register ...              register the public key (identity = TLS cert)
            keys fetch ...                 fetch + unwrap this site's copy of the secret

The custodian wraps only for keys whose fingerprint it pinned (ucadi/lwe/pins.py): a key the
key service lists but the site never confirmed out of band gets nothing. The custodian signs
every wrapped key with its Ed25519 key (ucadi/lwe/custodian.py), whose public half each site
configures (`site.custodian_key`, `keys fetch --custodian-key`): a site opens no key the central
side could have made.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ucadi.errors import CommandError
from ucadi.lwe.custodian import (
    PUBLIC_KEY_FILE as CUSTODIAN_PUBLIC_FILE,
)
from ucadi.lwe.custodian import (
    CustodianKey,
    custodian_public_key,
    ensure_custodian_key,
)
from ucadi.lwe.errors import KeyWrapError
from ucadi.lwe.keys import SecretKey, generate_secret_key
from ucadi.lwe.keywrap import (
    PUBLIC_KEY_FILE,
    SiteKeyPair,
    fingerprint,
    generate_site_key_pair,
    load_public_key,
    wrap_secret,
)
from ucadi.lwe.params import DEFAULT_PARAMETER_SET, PARAMETER_SETS
from ucadi.lwe.pins import PINS_FILE, PinError, SitePins

if TYPE_CHECKING:
    from ucadi.wire.crypto_client import KeyClient

SECRET_FILE = "lwe_secret.key"


def _key_client(args: argparse.Namespace) -> KeyClient:
    """A KeyService client over mTLS (gRPC is imported only when a command needs it)."""
    from ucadi.ops.serving import grpc_options
    from ucadi.ops.tls import TLSFiles, secure_channel
    from ucadi.wire.crypto_client import KeyClient

    channel = secure_channel(args.server, TLSFiles.from_dir(args.tls),
                             options=tuple(grpc_options()))
    return KeyClient(channel)


def _custodian(folder: Path) -> CustodianKey:
    try:
        return CustodianKey.load(folder)
    except KeyWrapError as exc:
        raise CommandError(f"{exc} (the custodian's signing key, kept beside the LWE secret; "
                           "sites accept only wrapped keys it signed)") from None


def _wrap_and_upload(args: argparse.Namespace, secret: SecretKey, pins_path: Path,
                     custodian: CustodianKey) -> int:
    client = _key_client(args)
    registered = client.site_keys()
    wanted = [s for s in args.sites.split(",") if s] if args.sites else sorted(registered)
    missing = [s for s in wanted if s not in registered]
    if missing or not wanted:
        raise CommandError(f"sites not registered: {', '.join(missing) or '(none registered)'}; "
                           "each site runs `ucadi keys register` first")
    pins = SitePins(pins_path)
    refused = []
    for site in wanted:  # the fingerprint is computed here, not taken from the key service
        try:
            pins.check(site, fingerprint(registered[site]))
        except PinError as exc:
            refused.append(str(exc))
    if refused:
        raise CommandError("; ".join(refused) + f" (pins: {pins_path}); nothing was wrapped")
    blobs = {site: wrap_secret(secret, site, load_public_key(registered[site]), custodian)
             for site in wanted}
    reply = client.put_wrapped_keys(secret.key_id_hex, secret.params.name, blobs,
                                    activate=not args.no_activate)
    print(f"key {secret.key_id_hex}: wrapped for {', '.join(wanted)} ({reply.stored} stored); "
          f"active key {reply.active_key_id or '(none)'}")
    return 0


def _create(args: argparse.Namespace) -> int:
    path = Path(args.out) / SECRET_FILE
    if path.exists() and not args.force:
        raise CommandError(f"{path} exists; use `ucadi keys rotate` (or --force) to replace it")
    secret = generate_secret_key(args.parameter_set)
    secret.save(path)
    print(f"created LWE secret {secret.key_id_hex} ({secret.params.name}) at {path}")
    _announce_custodian_key(Path(args.out))
    return 0


def _announce_custodian_key(folder: Path) -> None:
    custodian, created = ensure_custodian_key(folder)
    print(f"{'created' if created else 'kept'} the custodian signing key in {folder}; its public "
          f"key, which every site configures as site.custodian_key (read it out of band), is:")
    print(custodian.public_hex())


def _custodian_init(args: argparse.Namespace) -> int:
    _announce_custodian_key(Path(args.out))
    return 0


def _wrap(args: argparse.Namespace) -> int:
    pins = args.pins or Path(args.secret).parent / PINS_FILE
    custodian = _custodian(args.custodian or Path(args.secret).parent)
    return _wrap_and_upload(args, SecretKey.load(args.secret), pins, custodian)


def _pin(args: argparse.Namespace) -> int:
    try:
        SitePins(args.pins).pin(args.site, args.fingerprint)
    except PinError as exc:
        raise CommandError(str(exc)) from None
    print(f"pinned site {args.site}: {args.fingerprint.lower()} ({args.pins})")
    return 0


def _approve_key(args: argparse.Namespace) -> int:
    """A site replaced its key pair: the custodian heard the new fingerprint from the site."""
    try:
        SitePins(args.pins).pin(args.site, args.fingerprint)
    except PinError as exc:
        raise CommandError(str(exc)) from None
    _key_client(args).approve_site_key(args.site, args.fingerprint.lower())
    print(f"site {args.site} may now register the key {args.fingerprint.lower()}; pinned in "
          f"{args.pins}. Run `ucadi keys wrap` once it has registered.")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    custodian = _custodian(args.custodian or Path(args.out))
    path = Path(args.out) / SECRET_FILE
    if path.exists():
        old = SecretKey.load(path)
        archived = path.with_name(f"lwe_secret-{old.key_id_hex}.key")
        path.replace(archived)
        print(f"archived previous key {old.key_id_hex} at {archived}")
    secret = generate_secret_key(args.parameter_set)
    secret.save(path)
    print(f"created LWE secret {secret.key_id_hex} ({secret.params.name}) at {path}")
    return _wrap_and_upload(args, secret, args.pins or Path(args.out) / PINS_FILE, custodian)


def _site_init(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if (out / PUBLIC_KEY_FILE).exists() and not args.force:
        raise CommandError(f"{out} already holds a site key pair (use --force to replace it)")
    pair = generate_site_key_pair()
    private_path, public_path = pair.save(out)
    print(f"site key pair: {private_path} (private, keep at the site), {public_path}")
    print(f"fingerprint: {fingerprint(pair.public_pem())}")
    print("Read the fingerprint to the key custodian out of band (phone, signed letter): the "
          "federation key is wrapped only for a key whose fingerprint the custodian pinned.")
    return 0


def _register(args: argparse.Namespace) -> int:
    keys = SiteKeyPair.load(args.site_keys)
    reply = _key_client(args).register_site_key(keys.public_pem())
    print(f"registered site {reply.site}; public key fingerprint {reply.fingerprint}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from ucadi.ops.tls import TLSFiles, identity_from_pem

    try:
        custodian = custodian_public_key(args.custodian_key)
    except KeyWrapError as exc:
        raise CommandError(f"--custodian-key: {exc}") from None
    site = identity_from_pem(TLSFiles.from_dir(args.tls).cert.read_bytes()).name
    try:
        secret = _key_client(args).fetch_secret(site, SiteKeyPair.load(args.site_keys),
                                                custodian, args.key_id)
    except KeyWrapError as exc:
        raise CommandError(str(exc)) from None
    secret.save(Path(args.out))
    print(f"site {site}: unwrapped key {secret.key_id_hex} ({secret.params.name}) to {args.out}")
    return 0


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", required=True, help="crypto service HOST:PORT")
    parser.add_argument("--tls", required=True, type=Path,
                        help="folder with ca.crt, tls.crt, tls.key of the caller")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `ucadi keys` and its subcommands."""
    keys = subparsers.add_parser("keys", help="LWE key custodian and site key commands",
                                 description=__doc__, formatter_class=(
                                     argparse.RawDescriptionHelpFormatter))
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    parameter_help = f"parameter set ({', '.join(PARAMETER_SETS)})"

    create = sub.add_parser("create", help="new LWE secret and key id (custodian)")
    create.add_argument("--out", required=True, type=Path, help="custodian key folder")
    create.add_argument("--parameter-set", default=DEFAULT_PARAMETER_SET, help=parameter_help)
    create.add_argument("--force", action="store_true", help="replace an existing secret")
    create.set_defaults(func=_create)

    custodian_init = sub.add_parser("custodian-init", help="the custodian's Ed25519 signing key "
                                                           "(custodian; `create` makes it too)")
    custodian_init.add_argument("--out", required=True, type=Path, help="custodian key folder")
    custodian_init.set_defaults(func=_custodian_init)

    for name, handler, help_text in (("wrap", _wrap, "wrap the secret for sites and upload"),
                                     ("rotate", _rotate, "new key id, wrap and activate it")):
        action = sub.add_parser(name, help=help_text)
        if name == "wrap":
            action.add_argument("--secret", required=True, type=Path, help="LWE secret file")
        else:
            action.add_argument("--out", required=True, type=Path, help="custodian key folder")
            action.add_argument("--parameter-set", default=DEFAULT_PARAMETER_SET,
                                help=parameter_help)
        _server_options(action)
        action.add_argument("--sites", default="",
                            help="comma-separated approved sites (default: all registered)")
        action.add_argument("--no-activate", action="store_true",
                            help="upload without making this key id the active one")
        action.add_argument("--pins", type=Path, default=None,
                            help=f"the custodian's pinned fingerprints (default: {PINS_FILE} "
                                 "beside the secret)")
        action.add_argument("--custodian", type=Path, default=None,
                            help="folder of the custodian signing key (default: the secret's "
                                 "folder)")
        action.set_defaults(func=handler)

    pin = sub.add_parser("pin", help="pin a site's key fingerprint, heard out of band "
                                     "(custodian)")
    pin.add_argument("--site", required=True, help="site name (its certificate's CN)")
    pin.add_argument("--fingerprint", required=True,
                     help="64 hex characters, as `keys site-init` printed them at the site")
    pin.add_argument("--pins", required=True, type=Path,
                     help=f"pins file, e.g. CUSTODIAN_DIR/{PINS_FILE}")
    pin.set_defaults(func=_pin)

    approve = sub.add_parser("approve-key", help="let a site replace its registered key and "
                                                 "re-pin it (custodian)")
    approve.add_argument("--site", required=True, help="site name (its certificate's CN)")
    approve.add_argument("--fingerprint", required=True, help="the new key's fingerprint")
    approve.add_argument("--pins", required=True, type=Path, help="pins file")
    _server_options(approve)
    approve.set_defaults(func=_approve_key)

    init = sub.add_parser("site-init", help="a site's X25519 key pair")
    init.add_argument("--out", required=True, type=Path, help="site key folder")
    init.add_argument("--force", action="store_true", help="replace an existing key pair")
    init.set_defaults(func=_site_init)

    reg = sub.add_parser("register", help="register this site's public key (site)")
    reg.add_argument("--site-keys", required=True, type=Path, help="folder of site-init")
    _server_options(reg)
    reg.set_defaults(func=_register)

    fetch = sub.add_parser("fetch", help="fetch and unwrap this site's LWE secret (site)")
    fetch.add_argument("--site-keys", required=True, type=Path, help="folder of site-init")
    fetch.add_argument("--out", required=True, type=Path, help="where to write the secret")
    fetch.add_argument("--key-id", default="", help="key id (default: the active key)")
    fetch.add_argument("--custodian-key", required=True,
                       help="the key custodian's Ed25519 public key, 64 hex digits, heard from "
                            f"the custodian out of band (its {CUSTODIAN_PUBLIC_FILE})")
    _server_options(fetch)
    fetch.set_defaults(func=_fetch)
