"""How a site obtains the federation's LWE secret: register its X25519 public key with the key
service, wait for the key custodian to wrap the secret for it, unwrap it locally.

The site's X25519 private key and the unwrapped secret stay in the site's work folder (mode
0600); the key service only ever sees the public key and the wrapped blob. A blob is accepted
only when the key custodian's signature on it verifies under `site.custodian_key`: a blob the
central side made itself (it holds every site's public key) is logged and refused, and the site
keeps waiting for the custodian's.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ucadi.durable import write_durably
from ucadi.errors import UcadiError
from ucadi.lwe.custodian import SiteIdentity
from ucadi.lwe.errors import KeyWrapError
from ucadi.lwe.keys import SecretKey
from ucadi.lwe.keywrap import PRIVATE_KEY_FILE, SiteKeyPair, generate_site_key_pair
from ucadi.ops.serving import grpc_options
from ucadi.ops.tls import TLSFiles, identity_from_pem, secure_channel
from ucadi.wire.crypto_client import CryptoServiceError, KeyClient

log = logging.getLogger(__name__)
POLL_S = 1.0
# The custodian's certificate of the site's X25519 key (came with the wrapped key): presented
# with the site's round keys when masking.
IDENTITY_FILE = "site_identity.bin"
# Not yet wrapped for us, or the key service is (re)starting: keep waiting.
_WAIT_CODES = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
               grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class KeyNotApprovedError(UcadiError):
    """The custodian did not wrap the federation key for this site in time."""

    status = "DEADLINE_EXCEEDED"


def site_key_pair(work_dir: Path) -> SiteKeyPair:
    """The site's X25519 key pair, created on first use."""
    keys_dir = Path(work_dir) / "keys"
    if (keys_dir / PRIVATE_KEY_FILE).exists():
        return SiteKeyPair.load(keys_dir)
    pair = generate_site_key_pair()
    pair.save(keys_dir)
    return pair


def site_identity(work_dir: Path) -> tuple[SiteKeyPair, SiteIdentity]:
    """The site's key pair and the custodian's certificate of it (saved by obtain_secret)."""
    path = Path(work_dir) / "keys" / IDENTITY_FILE
    if not path.is_file():
        raise UcadiError(f"no custodian certificate of this site's key at {path}: it comes with "
                         "the wrapped LWE key; restart the trainer to fetch it again")
    return site_key_pair(work_dir), SiteIdentity.from_bytes(path.read_bytes())


def obtain_secret(crypto_target: str, tls: TLSFiles, work_dir: Path, wait_s: float,
                  custodian: Ed25519PublicKey,
                  cancelled: threading.Event | None = None) -> SecretKey | None:
    """Register our public key, then wait for and unwrap the active LWE secret, signed by the
    `custodian`; None when `cancelled` is set first (the site was asked to leave)."""
    site = identity_from_pem(tls.cert.read_bytes()).name
    pair = site_key_pair(work_dir)
    channel = secure_channel(crypto_target, tls, options=tuple(grpc_options()))
    keys = KeyClient(channel)
    deadline = time.monotonic() + wait_s
    registered = refusal_logged = False
    forged: set[str] = set()
    try:
        while time.monotonic() < deadline and not (cancelled and cancelled.is_set()):
            try:
                if not registered:
                    reply = keys.register_site_key(pair.public_pem())
                    registered = True
                    log.info("%s registered its X25519 key, fingerprint %s: read it to the key "
                             "custodian out of band (they pin it, then wrap the federation key "
                             "for this site); waiting", site, reply.fingerprint)
                try:
                    secret, identity = keys.fetch_site_key(site, pair, custodian)
                except KeyWrapError as exc:  # not the custodian's: never use it, keep waiting
                    if str(exc) not in forged:
                        forged.add(str(exc))
                        log.error("%s: %s", site, exc)
                    time.sleep(POLL_S)
                    continue
                secret.save(Path(work_dir) / "keys" / f"lwe-{secret.key_id_hex}.key")
                write_durably(Path(work_dir) / "keys" / IDENTITY_FILE, identity.to_bytes())
                log.info("%s unwrapped LWE key %s (%s)", site, secret.key_id_hex,
                         secret.params.name)
                return secret
            except CryptoServiceError as exc:
                if exc.code not in _WAIT_CODES:
                    raise
                if not registered and exc.code == grpc.StatusCode.FAILED_PRECONDITION \
                        and not refusal_logged:  # a new key pair, not yet approved
                    log.warning("%s: %s", site, exc)
                    refusal_logged = True
            time.sleep(POLL_S)
    finally:
        channel.close()
    if cancelled is not None and cancelled.is_set():
        return None
    refused = f" (refused: {'; '.join(sorted(forged))})" if forged else ""
    raise KeyNotApprovedError(f"no wrapped key for site {site!r} after {wait_s:.0f} s: the "
                              f"custodian must run `ucadi keys wrap` for this site{refused}")
