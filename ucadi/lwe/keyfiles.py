"""Private key files of the key ceremony: PEM (PKCS#8), written with mode 0600.

Both the sites' X25519 key pairs (`keywrap.SiteKeyPair`) and the custodian's Ed25519 signing key
(`custodian.CustodianKey`) are kept this way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ucadi.lwe.errors import KeyWrapError

PrivateKey = TypeVar("PrivateKey", X25519PrivateKey, Ed25519PrivateKey)


def write_private_key(path: Path, key: X25519PrivateKey | Ed25519PrivateKey) -> Path:
    """Write `key` as unencrypted PKCS#8 PEM, readable by its owner only (0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return path


def read_private_key(path: Path, kind: type[PrivateKey], how_to_create: str) -> PrivateKey:
    """Read a key written by `write_private_key`; KeyWrapError naming the file and the command
    that creates one when it is missing or of another kind."""
    path = Path(path)
    if not path.is_file():
        raise KeyWrapError(f"no key at {path}; create one with `{how_to_create}`")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as exc:
        raise KeyWrapError(f"{path} is not a PEM private key ({exc})") from exc
    if not isinstance(key, kind):
        raise KeyWrapError(f"{path} is not an {kind.__name__.removesuffix('PrivateKey')} "
                           f"private key (made by `{how_to_create}`)")
    return key
