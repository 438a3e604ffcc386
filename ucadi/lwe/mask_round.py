"""A masked round's parties and their round keys, and the Shamir share pairs they seal for
each other (ucadi/lwe/masking.py uses them; the protocol is described there).

A round is bound by `MaskingRound` (federation, LWE key id, round, the sites that advertised
keys, t). Each site's `RoundKeys` are two X25519 key pairs (share key, mask key) and a self-mask
seed; it advertises their public halves with its custodian-certified identity
(`PublicRoundKeys`). A `SharePair` (its shares of one site's self-mask seed and mask key) is
sealed for one recipient under both the round share keys' and the identity keys' agreement,
bound to the round, both names and a digest of the whole key set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ucadi.lwe.custodian import SiteIdentity
from ucadi.lwe.errors import LweError
from ucadi.lwe.shamir import SECRET_BYTES, SHARE_BYTES, share_from_bytes, share_to_bytes

SHARE_DOMAIN = b"ucadi/lwe/mask-shares/v2"
KEY_SET_DOMAIN = b"ucadi/lwe/mask-key-set/v1"
KEY_BYTES = 32
_NONCE_BYTES = 12


class MaskingError(LweError):
    """A masking step that must not go on: sets that break the honest rule, too few sites,
    shares that do not open or do not match the advertised keys."""

    status = "FAILED_PRECONDITION"


def default_threshold(site_count: int) -> int:
    """t: a majority of the round's sites (the issue's default)."""
    return site_count // 2 + 1


@dataclass(frozen=True)
class MaskingRound:
    """What binds a round's masks: the federation, the LWE key, the round and its key set U1
    (the sites that advertised keys), the threshold t, and the neighbour graph's degree k
    (ucadi/lwe/neighbours.py; 0 = the complete graph, t then out of all n sites, else out of
    a site's k neighbours and itself)."""

    federation: str
    key_id: bytes
    round_number: int
    sites: tuple[str, ...]
    threshold: int
    neighbours: int = 0

    def __post_init__(self) -> None:
        if list(self.sites) != sorted(set(self.sites)):
            raise MaskingError("a masking round's sites must be distinct and sorted by name")
        n = len(self.sites)
        if self.neighbours and not (self.neighbours % 2 == 0 and 2 <= self.neighbours <= n - 2):
            raise MaskingError(f"a sparse neighbour graph over {n} sites needs an even degree "
                               f"in 2..{n - 2}, got {self.neighbours} (0 = the complete graph)")
        holders = self.neighbours + 1 if self.neighbours else n
        if not 2 <= self.threshold <= holders:
            raise MaskingError(f"threshold {self.threshold} must be in 2..{holders} (the "
                               + ("sites that advertised keys)" if not self.neighbours else
                                  "holders of a site's shares: its neighbours and itself)"))

    def holder(self, site: str) -> int:
        """The Shamir x coordinate of `site` (1..n, by name)."""
        try:
            return self.sites.index(site) + 1
        except ValueError:
            raise MaskingError(f"{site!r} advertised no keys for round "
                               f"{self.round_number}") from None

    def binding(self, domain: bytes, *names: str) -> bytes:
        """Length-prefixed (domain, federation, key id, round, names): never equal for two
        different rounds, keys, federations or site pairs."""
        parts = [domain, self.federation.encode(), self.key_id,
                 self.round_number.to_bytes(8, "big"), *(name.encode() for name in names)]
        return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


@dataclass(frozen=True)
class PublicRoundKeys:
    """What a site advertises for a round: the public halves of its share and mask keys, and
    its custodian-certified identity (`SiteIdentity.to_bytes()`)."""

    share_public: bytes
    mask_public: bytes
    identity: bytes = b""


def key_set_digest(context: MaskingRound, advertised: Mapping[str, PublicRoundKeys]) -> bytes:
    """SHA-256 of the round's binding (with the graph's degree k and the threshold t) and every
    site's advertised keys and identity, by name: what each share pair is bound to, so two sites
    shown different key sets cannot open each other's share pairs."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(context.binding(KEY_SET_DOMAIN, *context.sites))
    # k (0: the complete graph) and t: a site shown a lower t than the others (fewer of its
    # shares needed to rebuild its secrets) cannot open their share pairs, nor they its.
    digest.update(b"neighbours" + context.neighbours.to_bytes(4, "big")
                  + context.threshold.to_bytes(4, "big"))
    for site in context.sites:
        keys = advertised[site]
        for part in (site.encode(), keys.share_public, keys.mask_public, keys.identity):
            digest.update(len(part).to_bytes(4, "big") + part)
    return digest.finalize()


@dataclass(frozen=True)
class RoundKeys:
    """A site's private round keys and self-mask seed (kept at the site, durably, for the
    round only; `to_bytes` for its state file)."""

    share_key: X25519PrivateKey
    mask_key: X25519PrivateKey
    self_seed: bytes

    def public(self, identity: SiteIdentity) -> PublicRoundKeys:
        """The advertisement, with the site's certified identity."""
        return PublicRoundKeys(raw_public(self.share_key), raw_public(self.mask_key),
                               identity.to_bytes())

    def to_bytes(self) -> bytes:
        """Share key, mask key, self-mask seed: 96 bytes."""
        return raw_private(self.share_key) + raw_private(self.mask_key) + self.self_seed

    @classmethod
    def from_bytes(cls, data: bytes) -> RoundKeys:
        """Inverse of to_bytes."""
        if len(data) != 2 * KEY_BYTES + SECRET_BYTES:
            raise MaskingError(f"round keys are {2 * KEY_BYTES + SECRET_BYTES} bytes, "
                               f"got {len(data)}")
        return cls(X25519PrivateKey.from_private_bytes(data[:KEY_BYTES]),
                   X25519PrivateKey.from_private_bytes(data[KEY_BYTES:2 * KEY_BYTES]),
                   data[2 * KEY_BYTES:])


def generate_round_keys() -> RoundKeys:
    """Fresh share and mask key pairs and a self-mask seed (OS CSPRNG)."""
    return RoundKeys(X25519PrivateKey.generate(), X25519PrivateKey.generate(),
                     os.urandom(SECRET_BYTES))


def raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class SharePair:
    """One holder's shares of one site's self-mask seed and mask key."""

    self_seed: int
    mask_key: int

    def to_bytes(self) -> bytes:
        """Both shares, SHARE_BYTES each."""
        return share_to_bytes(self.self_seed) + share_to_bytes(self.mask_key)

    @classmethod
    def from_bytes(cls, data: bytes) -> SharePair:
        """Inverse of to_bytes."""
        if len(data) != 2 * SHARE_BYTES:
            raise MaskingError(f"a share pair is {2 * SHARE_BYTES} bytes, got {len(data)}")
        return cls(share_from_bytes(data[:SHARE_BYTES]), share_from_bytes(data[SHARE_BYTES:]))


def _share_key(context: MaskingRound, keys: RoundKeys, identity_key: X25519PrivateKey,
               peer: PublicRoundKeys, sender: str, recipient: str,
               advertised: Mapping[str, PublicRoundKeys], digest: bytes | None
               ) -> tuple[bytes, bytes]:
    """AES key and associated data of the share pair sender -> recipient: both the round share
    keys' and the identity keys' agreement, bound to the round, both names and the key set
    (`digest`: its key_set_digest, if the caller already made it)."""
    binding = context.binding(SHARE_DOMAIN, sender, recipient) + (
        digest or key_set_digest(context, advertised))
    peer_identity = X25519PublicKey.from_public_bytes(SiteIdentity.from_bytes(
        peer.identity).public_raw)
    shared = (keys.share_key.exchange(X25519PublicKey.from_public_bytes(peer.share_public))
              + identity_key.exchange(peer_identity))
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=binding).derive(shared)
    return key, binding


def seal_share_pair(context: MaskingRound, sender_keys: RoundKeys,
                    sender_identity_key: X25519PrivateKey, sender: str, recipient: str,
                    advertised: Mapping[str, PublicRoundKeys], pair: SharePair,
                    digest: bytes | None = None) -> bytes:
    """A share pair from `sender` readable by `recipient` only (nonce + AES-256-GCM), under the
    key set `advertised` as the sender sees it (`digest`: its key_set_digest, made once per
    key set by a caller that seals many)."""
    key, binding = _share_key(context, sender_keys, sender_identity_key, advertised[recipient],
                              sender, recipient, advertised, digest)
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, pair.to_bytes(), binding)


def open_share_pair(context: MaskingRound, recipient_keys: RoundKeys,
                    recipient_identity_key: X25519PrivateKey, recipient: str, sender: str,
                    advertised: Mapping[str, PublicRoundKeys], sealed: bytes,
                    digest: bytes | None = None) -> SharePair:
    """Open a share pair sealed for `recipient`; MaskingError if it was made for another
    round, pair of sites, key or key set, by anyone but `sender`, or altered on the way
    (`digest` as in seal_share_pair)."""
    key, binding = _share_key(context, recipient_keys, recipient_identity_key,
                              advertised[sender], sender, recipient, advertised, digest)
    try:
        plain = AESGCM(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], binding)
    except (InvalidTag, ValueError):
        raise MaskingError(f"the shares {sender} sent {recipient} for round "
                           f"{context.round_number} do not open: altered, replayed from "
                           "another round, sealed under another key, not made by "
                           f"{sender}, or {sender} was shown other round keys than "
                           f"{recipient}") from None
    return SharePair.from_bytes(plain)
