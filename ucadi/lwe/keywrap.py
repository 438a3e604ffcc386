"""Wrapping the LWE secret for one site: X25519 ECDH -> HKDF-SHA256 -> AES-256-GCM.

The custodian wraps the secret separately for each approved site's X25519 public key with a
fresh ephemeral key pair; the key service stores the blobs and can open none of them. The
associated data binds a blob to its key id and site name, so a blob replayed under another
key id or handed to another site fails to open.

Blob layout: version u8 | ephemeral public key (32 B) | nonce (12 B) | AES-GCM ciphertext+tag.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ucadi.lwe.errors import KeyWrapError
from ucadi.lwe.keys import SecretKey

WRAP_VERSION = 1
_PUBLIC_BYTES = 32
_NONCE_BYTES = 12
_HKDF_INFO = b"ucadi/lwe-secret-wrap/v1"
PRIVATE_KEY_FILE = "site_x25519.key"
PUBLIC_KEY_FILE = "site_x25519.pub"


@dataclass(frozen=True)
class SiteKeyPair:
    """A site's X25519 key pair; the private half never leaves the site."""

    private_key: X25519PrivateKey

    @property
    def public_key(self) -> X25519PublicKey:
        """The public half, registered with the key service."""
        return self.private_key.public_key()

    def public_pem(self) -> bytes:
        """Public key as PEM (what the key service stores)."""
        return public_key_pem(self.public_key)

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write the private key (mode 0600) and public key PEM files into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        private_path = directory / PRIVATE_KEY_FILE
        pem = self.private_key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        public_path = directory / PUBLIC_KEY_FILE
        public_path.write_bytes(self.public_pem())
        return private_path, public_path

    @classmethod
    def load(cls, directory: Path) -> SiteKeyPair:
        """Read the private key written by `save`."""
        path = Path(directory) / PRIVATE_KEY_FILE
        if not path.is_file():
            raise KeyWrapError(f"no site key at {path}; create one with `ucadi keys site-init`")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, X25519PrivateKey):
            raise KeyWrapError(f"{path} is not an X25519 private key")
        return cls(key)


def generate_site_key_pair() -> SiteKeyPair:
    """A new X25519 key pair for a site."""
    return SiteKeyPair(X25519PrivateKey.generate())


def public_key_pem(key: X25519PublicKey) -> bytes:
    """PEM (SubjectPublicKeyInfo) of an X25519 public key."""
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(pem: bytes) -> str:
    """Hex SHA-256 of a site's public key PEM: what the site reads out to the custodian."""
    return hashlib.sha256(pem).hexdigest()


def load_public_key(pem: bytes) -> X25519PublicKey:
    """Parse an X25519 public key PEM; KeyWrapError if it is anything else."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise KeyWrapError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, X25519PublicKey):
        raise KeyWrapError("site public key must be X25519 (made by `ucadi keys site-init`)")
    return key


def _associated_data(key_id: bytes, site: str) -> bytes:
    return b"ucadi-lwe-key|" + key_id + b"|" + site.encode()


def _derive(shared: bytes, ephemeral_public: bytes, site_public: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral_public + site_public,
                info=_HKDF_INFO)
    return hkdf.derive(shared)


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def wrap_secret(secret: SecretKey, site: str, site_public: X25519PublicKey) -> bytes:
    """Encrypt the serialized secret for one site (fresh ephemeral key and nonce)."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = _raw(ephemeral.public_key())
    key = _derive(ephemeral.exchange(site_public), ephemeral_raw, _raw(site_public))
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, secret.to_bytes(),
                                 _associated_data(secret.key_id, site))
    return bytes([WRAP_VERSION]) + ephemeral_raw + nonce + sealed


def unwrap_secret(blob: bytes, key_id: bytes, site: str, site_keys: SiteKeyPair) -> SecretKey:
    """Open a wrapped secret with the site's private key; KeyWrapError if it does not open."""
    header = 1 + _PUBLIC_BYTES + _NONCE_BYTES
    if len(blob) <= header or blob[0] != WRAP_VERSION:
        raise KeyWrapError(f"not a version-{WRAP_VERSION} wrapped key ({len(blob)} bytes)")
    ephemeral_raw = blob[1:1 + _PUBLIC_BYTES]
    nonce = blob[1 + _PUBLIC_BYTES:header]
    ephemeral = X25519PublicKey.from_public_bytes(ephemeral_raw)
    key = _derive(site_keys.private_key.exchange(ephemeral), ephemeral_raw,
                  _raw(site_keys.public_key))
    try:
        plain = AESGCM(key).decrypt(nonce, blob[header:], _associated_data(key_id, site))
    except InvalidTag as exc:
        raise KeyWrapError(f"wrapped key {key_id.hex()} for site {site!r} does not open with "
                           "this site key (wrong site, key id or tampered blob)") from exc
    secret = SecretKey.from_bytes(plain)
    if secret.key_id != key_id:
        raise KeyWrapError("wrapped key id does not match the requested key id")
    return secret
