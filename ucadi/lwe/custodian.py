"""The key custodian's Ed25519 signing key: sites accept only a secret the custodian wrapped.

A wrapped LWE secret (`keywrap.wrap_secret`) is encrypted to one site's X25519 key, whose public
half the key service stores. Encryption alone does not say who wrapped it: the central side,
holding every site's public key, could wrap a secret of its own for each site and then read
every upload. The custodian therefore signs each blob, and a site opens only blobs whose
signature verifies under the custodian's public key, which the site's operator configures from
the custodian out of band (`site.custodian_key`, 64 hex digits), as the custodian pins the
sites' fingerprints (`ucadi/lwe/pins.py`).

Files: custodian_ed25519.key (private, mode 0600, beside the LWE secret) and
custodian_ed25519.pub (the public key as 64 hex digits, to hand to the sites).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ucadi.lwe.errors import KeyWrapError
from ucadi.lwe.keyfiles import read_private_key, write_private_key

PRIVATE_KEY_FILE = "custodian_ed25519.key"
PUBLIC_KEY_FILE = "custodian_ed25519.pub"
SIGNATURE_BYTES = 64
_HEX_KEY = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CustodianKey:
    """The custodian's Ed25519 key pair; the private half stays with the custodian."""

    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_hex(self) -> str:
        """The public key as 64 hex digits: what the sites configure."""
        return self.public_key.public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw).hex()

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write the private key (0600) and the public key's hex into `directory`."""
        private_path = write_private_key(Path(directory) / PRIVATE_KEY_FILE, self.private_key)
        public_path = Path(directory) / PUBLIC_KEY_FILE
        public_path.write_text(self.public_hex() + "\n")
        return private_path, public_path

    @classmethod
    def load(cls, directory: Path) -> CustodianKey:
        return cls(read_private_key(Path(directory) / PRIVATE_KEY_FILE, Ed25519PrivateKey,
                                    "ucadi keys custodian-init --out DIR"))


def generate_custodian_key() -> CustodianKey:
    return CustodianKey(Ed25519PrivateKey.generate())


def ensure_custodian_key(directory: Path) -> tuple[CustodianKey, bool]:
    """The custodian key in `directory`, created there when absent; (key, created)."""
    if (Path(directory) / PRIVATE_KEY_FILE).exists():
        return CustodianKey.load(directory), False
    key = generate_custodian_key()
    key.save(directory)
    return key, True


def custodian_public_key(text: str) -> Ed25519PublicKey:
    """Parse the custodian's public key as configured at a site (64 hex digits)."""
    value = text.strip().lower()
    if not _HEX_KEY.match(value):
        raise KeyWrapError(f"custodian key {text!r} is not 64 hex digits (the Ed25519 public key "
                           f"the custodian prints, also in its {PUBLIC_KEY_FILE})")
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(value))


def verify(public: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True
