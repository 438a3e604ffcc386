"""Wrapping the LWE secret for one site: X25519 ECDH -> HKDF-SHA256 -> AES-256-GCM.

The custodian wraps the secret separately for each approved site's X25519 public key with a
fresh ephemeral key pair; the key service stores the blobs and can open none of them. The
associated data binds a blob to its key id and site name, so a blob replayed under another
key id or handed to another site fails to open. The custodian signs each blob with its Ed25519
key (`custodian.py`) and a site opens only a blob whose signature verifies under the custodian
key it was configured with: whoever holds the sites' public keys (the key service does) can
encrypt to them, but only the custodian can make a blob a site accepts.

Blob layout (version 2): version u8 | ephemeral public key (32 B) | nonce (12 B) |
AES-GCM ciphertext+tag | Ed25519 signature (64 B) over the domain tag, key id, site name and
everything before the signature. The encrypted plaintext is the serialized secret followed by
the custodian's certificate of the site's X25519 key (`custodian.SiteIdentity`, 64 B), which
the site presents with its round keys when masking. Version 1 (unsigned) blobs are refused.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ucadi.lwe.custodian import (
    SIGNATURE_BYTES,
    CustodianKey,
    SiteIdentity,
    certify_site,
    verify,
)
from ucadi.lwe.errors import KeyWrapError
from ucadi.lwe.keyfiles import read_private_key, write_private_key
from ucadi.lwe.keys import SecretKey

WRAP_VERSION = 2
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
        private_path = write_private_key(directory / PRIVATE_KEY_FILE, self.private_key)
        public_path = directory / PUBLIC_KEY_FILE
        public_path.write_bytes(self.public_pem())
        return private_path, public_path

    @classmethod
    def load(cls, directory: Path) -> SiteKeyPair:
        """Read the private key written by `save`."""
        return cls(read_private_key(Path(directory) / PRIVATE_KEY_FILE, X25519PrivateKey,
                                    "ucadi keys site-init --out DIR"))


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


def _signed_message(key_id: bytes, site: str, body: bytes) -> bytes:
    return b"ucadi-lwe-key-signature|" + key_id + b"|" + site.encode() + b"|" + body


def wrap_secret(secret: SecretKey, site: str, site_public: X25519PublicKey,
                custodian: CustodianKey) -> bytes:
    """Encrypt the serialized secret for one site (fresh ephemeral key and nonce) and sign the
    blob with the custodian's key."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = _raw(ephemeral.public_key())
    key = _derive(ephemeral.exchange(site_public), ephemeral_raw, _raw(site_public))
    nonce = os.urandom(_NONCE_BYTES)
    identity = certify_site(custodian, site, _raw(site_public))
    sealed = AESGCM(key).encrypt(nonce, secret.to_bytes() + identity.certificate,
                                 _associated_data(secret.key_id, site))
    body = bytes([WRAP_VERSION]) + ephemeral_raw + nonce + sealed
    return body + custodian.sign(_signed_message(secret.key_id, site, body))


def unwrap_secret(blob: bytes, key_id: bytes, site: str, site_keys: SiteKeyPair,
                  custodian_public: Ed25519PublicKey) -> SecretKey:
    """Check the custodian's signature, then open a wrapped secret with the site's private key;
    KeyWrapError if either fails."""
    return unwrap_site_key(blob, key_id, site, site_keys, custodian_public)[0]


def unwrap_site_key(blob: bytes, key_id: bytes, site: str, site_keys: SiteKeyPair,
                    custodian_public: Ed25519PublicKey) -> tuple[SecretKey, SiteIdentity]:
    """`unwrap_secret`, and the custodian's certificate of this site's key that came with it."""
    header = 1 + _PUBLIC_BYTES + _NONCE_BYTES
    if blob[:1] == b"\x01":
        raise KeyWrapError("the wrapped key is an unsigned version-1 blob; sites accept only "
                           "blobs signed by the custodian: the custodian re-runs `ucadi keys "
                           "wrap` (which signs with its custodian key)")
    if len(blob) <= header + SIGNATURE_BYTES or blob[0] != WRAP_VERSION:
        raise KeyWrapError(f"not a version-{WRAP_VERSION} wrapped key ({len(blob)} bytes)")
    body, signature = blob[:-SIGNATURE_BYTES], blob[-SIGNATURE_BYTES:]
    if not verify(custodian_public, signature, _signed_message(key_id, site, body)):
        raise KeyWrapError(f"wrapped key {key_id.hex()} for site {site!r} is not signed by the "
                           "configured key custodian (site.custodian_key): refusing it; whoever "
                           "made it could read this site's updates")
    blob = body
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
    identity = SiteIdentity(_raw(site_keys.public_key), plain[-SIGNATURE_BYTES:])
    identity.verify(custodian_public, site)
    secret = SecretKey.from_bytes(plain[:-SIGNATURE_BYTES])
    if secret.key_id != key_id:
        raise KeyWrapError("wrapped key id does not match the requested key id")
    return secret, identity
