"""The key custodian's Ed25519 signing key: sites accept only a secret the custodian wrapped.

A wrapped LWE secret (`keywrap.wrap_secret`) is encrypted to one site's X25519 key, whose public
half the key service stores. Encryption alone does not say who wrapped it: the central side,
holding every site's public key, could wrap a secret of its own for each site and then read
every upload. The custodian therefore signs each blob, and a site opens only blobs whose
signature verifies under the custodian's public key, which the site's operator configures from
the custodian out of band (`site.custodian_key`, 64 hex digits), as the custodian pins the
sites' fingerprints (`ucadi/lwe/pins.py`).

The custodian also certifies each site's long-term X25519 key (the one it pinned and wraps
for): a `SiteIdentity` is the site's name, that public key and the custodian's signature over
both. It travels inside the site's wrapped key (only the site reads it) and the site presents
it with its round keys when masking (ucadi/lwe/masking.py), so other sites know the round keys
come from that site and not from the central side that relays them.

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

_IDENTITY_DOMAIN = b"ucadi-site-identity/v1|"
IDENTITY_BYTES = 32 + 64
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


def read_custodian_public_key(directory: Path) -> Ed25519PublicKey:
    """The public key `CustodianKey.save` wrote into `directory` (what a site configures)."""
    path = Path(directory) / PUBLIC_KEY_FILE
    if not path.is_file():
        raise KeyWrapError(f"no custodian public key at {path}; `ucadi keys create` or "
                           "`ucadi keys custodian-init` writes it")
    return custodian_public_key(path.read_text())


def verify(public: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _identity_message(site: str, public_raw: bytes) -> bytes:
    return _IDENTITY_DOMAIN + public_raw + site.encode()


@dataclass(frozen=True)
class SiteIdentity:
    """A site's long-term X25519 public key (raw, 32 bytes) with the custodian's signature over
    it and the site's name: what vouches for the site's round keys to other sites."""

    public_raw: bytes
    certificate: bytes

    def to_bytes(self) -> bytes:
        """Public key then signature: IDENTITY_BYTES bytes."""
        return self.public_raw + self.certificate

    @classmethod
    def from_bytes(cls, data: bytes) -> SiteIdentity:
        if len(data) != IDENTITY_BYTES:
            raise KeyWrapError(f"a site identity is {IDENTITY_BYTES} bytes (X25519 public key "
                               f"and the custodian's signature), got {len(data)}")
        return cls(bytes(data[:32]), bytes(data[32:]))

    def verify(self, custodian: Ed25519PublicKey, site: str) -> None:
        """KeyWrapError unless the custodian certified this key for `site`."""
        if not verify(custodian, self.certificate, _identity_message(site, self.public_raw)):
            raise KeyWrapError(f"the identity presented for site {site!r} is not certified by "
                               "the configured key custodian")


def certify_site(custodian: CustodianKey, site: str, public_raw: bytes) -> SiteIdentity:
    """The custodian's certificate of `site`'s long-term X25519 key (done when it wraps)."""
    return SiteIdentity(public_raw, custodian.sign(_identity_message(site, public_raw)))
