"""Pairwise-cancelling masks over ciphertext bodies: no single party reads a site's update
(issue 21; Bonawitz et al., CCS 2017, with double masking; docs/design/multiparty.md).

Every site still encrypts under the shared LWE secret, but before its ciphertext leaves, it
adds to the body, coefficient by coefficient modulo q,

    PRG(self_seed_u) + sum_{v in U2, v != u} sign(u, v) PRG(s_uv),   sign = +1 if u < v else -1,

where s_uv = HKDF(X25519(mask key of u, mask key of v)) bound to (federation, LWE key id,
round, both names). The pairwise terms cancel in the sum over U2, so the summed body differs
from an ordinary sum only by the survivors' self-masks and the pairwise masks between
survivors and sites that dropped after sharing their keys; `unmasking_terms` names exactly
those, from the secrets the survivors' Shamir shares give (`recover_round_secrets`), and
`unmask_sum` subtracts them. A mask is uniform over the coefficient bits from sum_drop_bits
up (`mask_bits`): a one-time pad of every bit that carries the message, so a single masked
body hides the update even from a holder of the LWE secret; and, being a multiple of
2^sum_drop_bits, it commutes with the rounding of contributions and sums, so the unmasked sum
is byte for byte the ordinary sum: its exactness bound (params.py) and its integrity tags are
unchanged.

Per round each site makes two X25519 key pairs: the share key encrypts the Shamir shares it
sends to each other site (AES-256-GCM, relayed by the aggregator), the mask key agrees the
pairwise seeds. The mask key's private half and the self-mask seed are what it shares, t of n.
The honest rule (`answer_unmasking`): for one round a site reveals self-mask shares of the
announced survivors and mask-key shares of the announced dropped sites, and never answers the
same round with other sets, so no site's two secrets are both revealed.

Round keys are authenticated: each site advertises, beside them, its `SiteIdentity` (its
long-term X25519 key, certified by the key custodian; ucadi/lwe/custodian.py), and every
`SitePairing` checks every identity of the key set against the custodian's key. A share pair
is sealed under a key agreed from both the round share keys and the two sites' identity keys,
bound to a digest of the whole key set as the sender saw it: the central side, which relays
the keys, can neither open a share pair by substituting a site's round keys (it lacks both
identity keys) nor show two sites different key sets without their share pairs failing to
open, which the recipient checks before it masks anything (`SitePairing.open_all`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ucadi.lwe.custodian import SiteIdentity
from ucadi.lwe.errors import KeyWrapError, LweError
from ucadi.lwe.params import LweParameters
from ucadi.lwe.shamir import (
    SECRET_BYTES,
    SHARE_BYTES,
    recover_secret,
    share_from_bytes,
    share_to_bytes,
    split_secret,
)

PAIR_DOMAIN = b"ucadi/lwe/pairwise-mask/v1"
SHARE_DOMAIN = b"ucadi/lwe/mask-shares/v2"
KEY_SET_DOMAIN = b"ucadi/lwe/mask-key-set/v1"
KEY_BYTES = 32
_NONCE_BYTES = 12
_MASK_SLICE = 1 << 20  # coefficients expanded at a time: bounded temporaries at 46 M values


class MaskingError(LweError):
    """A masking step that must not go on: sets that break the honest rule, too few sites,
    shares that do not open or do not match the advertised keys."""

    status = "FAILED_PRECONDITION"


def default_threshold(site_count: int) -> int:
    """t: a majority of the round's sites (the issue's default)."""
    return site_count // 2 + 1


@dataclass(frozen=True)
class MaskingRound:
    """What binds a round's masks: the federation, the LWE key, the round and its share
    holders U1 (the sites that advertised keys), and the threshold t."""

    federation: str
    key_id: bytes
    round_number: int
    sites: tuple[str, ...]
    threshold: int

    def __post_init__(self) -> None:
        if list(self.sites) != sorted(set(self.sites)):
            raise MaskingError("a masking round's sites must be distinct and sorted by name")
        if not 2 <= self.threshold <= len(self.sites):
            raise MaskingError(f"threshold {self.threshold} must be in 2..{len(self.sites)} "
                               "(the sites that advertised keys)")

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
    """SHA-256 of the round's binding and every site's advertised keys and identity, by name:
    what each share pair is bound to, so two sites shown different key sets cannot open each
    other's share pairs."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(context.binding(KEY_SET_DOMAIN, *context.sites))
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
        return PublicRoundKeys(_raw_public(self.share_key), _raw_public(self.mask_key),
                               identity.to_bytes())

    def to_bytes(self) -> bytes:
        """Share key, mask key, self-mask seed: 96 bytes."""
        return _raw_private(self.share_key) + _raw_private(self.mask_key) + self.self_seed

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


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def _agree(private: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def pairwise_seed(context: MaskingRound, mask_key: X25519PrivateKey, peer_mask_public: bytes,
                  site: str, peer: str) -> bytes:
    """s_uv: the PRG seed `site` and `peer` both derive for this round (order-free)."""
    low, high = sorted((site, peer))
    return _agree(mask_key, peer_mask_public, context.binding(PAIR_DOMAIN, low, high))


def mask_sign(site: str, peer: str) -> int:
    """+1 if `site` sorts before `peer`, else -1: each pair's two masks cancel."""
    return 1 if site < peer else -1


def expand_mask(seed: bytes, start: int, count: int, modulus_bits: int) -> np.ndarray:
    """PRG(seed) coefficients [start, start + count) mod 2^modulus_bits (AES-256-CTR, 8 bytes
    per coefficient, counter = start // 2, so any range is made on its own); a mask is this
    with its bits below sum_drop_bits cleared (`mask_bits`)."""
    first = start - start % 2
    blocks = (start + count - first + 1) // 2
    encryptor = Cipher(algorithms.AES(seed), modes.CTR((first // 2).to_bytes(16, "big"))
                       ).encryptor()
    words = np.frombuffer(encryptor.update(bytes(16 * blocks)), dtype="<u8")
    values = words[start - first:start - first + count].copy()
    if modulus_bits < 64:
        values &= np.uint64((1 << modulus_bits) - 1)
    return values


def mask_bits(params: LweParameters) -> np.uint64:
    """Which coefficient bits a mask covers: bits sum_drop_bits..Q-1. A mask is a multiple of
    2^sum_drop_bits, so rounding a masked contribution or sum commutes with the mask and the
    unmasked sum is byte-identical to the shared-key sum; the low bits it leaves hold only
    a*s + e (the message starts at bit Q - P >= sum_drop_bits), never the update."""
    return np.uint64(params.modulus_mask & ~((1 << params.sum_drop_bits) - 1))


def apply_mask_terms(body: np.ndarray, start: int, terms: Iterable[tuple[bytes, int]],
               params: LweParameters) -> None:
    """body += sum sign * PRG(seed) (masked to `mask_bits`) over the body's coefficients, in
    place, mod q: the same keystream as expand_mask, written into one reused buffer and added
    from it."""
    reduce = np.uint64(params.modulus_mask)
    covered = mask_bits(params)
    terms = list(terms)
    slice_blocks = min(_MASK_SLICE, body.size) // 2 + 1  # batches are often far smaller
    zeros = bytes(16 * slice_blocks)
    buffer = bytearray(16 * slice_blocks + 15)  # update_into wants block size - 1 spare bytes
    for offset in range(0, body.size, _MASK_SLICE):
        part = body[offset:offset + _MASK_SLICE]
        first = start + offset
        aligned = first - first % 2
        blocks = (first + part.size - aligned + 1) // 2
        for seed, sign in terms:
            encryptor = Cipher(algorithms.AES(seed),
                               modes.CTR((aligned // 2).to_bytes(16, "big"))).encryptor()
            encryptor.update_into(memoryview(zeros)[:16 * blocks], buffer)
            words = np.frombuffer(buffer, dtype="<u8", count=2 * blocks)
            mask = words[first - aligned:first - aligned + part.size]
            np.bitwise_and(mask, covered, out=mask)
            if sign > 0:
                np.add(part, mask, out=part)
            else:
                np.subtract(part, mask, out=part)
        part &= reduce


@dataclass(frozen=True)
class SitePairing:
    """One site's view of a round once keys are advertised: its own keys and the others',
    each checked against the custodian's certificate of its site's identity key."""

    context: MaskingRound
    site: str
    keys: RoundKeys
    advertised: Mapping[str, PublicRoundKeys]
    identity_key: X25519PrivateKey
    custodian: Ed25519PublicKey

    def __post_init__(self) -> None:
        for site in self.context.sites:
            if site not in self.advertised:
                raise MaskingError(f"the key set names {site} but carries no keys for it")
            try:
                SiteIdentity.from_bytes(self.advertised[site].identity).verify(self.custodian,
                                                                              site)
            except KeyWrapError as exc:
                raise MaskingError(f"round {self.context.round_number}'s key set: {exc}; "
                                   "its round keys may not be that site's, so this site "
                                   "takes no part in the round") from None

    def seal_for(self, recipient: str, pair: SharePair) -> bytes:
        """A share pair for `recipient` alone (see seal_share_pair)."""
        return seal_share_pair(self.context, self.keys, self.identity_key, self.site, recipient,
                               self.advertised, pair)

    def open_from(self, sender: str, sealed: bytes) -> SharePair:
        """The share pair `sender` sealed for this site (see open_share_pair)."""
        return open_share_pair(self.context, self.keys, self.identity_key, self.site, sender,
                               self.advertised, sealed)

    def open_all(self, received: Mapping[str, bytes]) -> dict[str, SharePair]:
        """Open every share pair received: MaskingError (naming the sender) if one does not
        open, i.e. its sender saw other keys than this site did, or it was not its sender's."""
        return {sender: self.open_from(sender, sealed) for sender, sealed in received.items()}

    def seed_with(self, peer: str) -> bytes:
        """s_uv with `peer`."""
        return pairwise_seed(self.context, self.keys.mask_key,
                             self.advertised[peer].mask_public, self.site, peer)

    def share_messages(self) -> dict[str, bytes]:
        """For every site of the round (itself included), its Shamir shares of this site's
        self-mask seed and mask key, sealed for that site alone."""
        holders = {site: self.context.holder(site) for site in self.context.sites}
        t = self.context.threshold
        seed_shares = split_secret(self.keys.self_seed, t, list(holders.values()))
        key_shares = split_secret(_raw_private(self.keys.mask_key), t, list(holders.values()))
        return {site: self.seal_for(site, SharePair(seed_shares[x], key_shares[x]))
                for site, x in holders.items()}

    def mask_terms(self, participants: Iterable[str]) -> list[tuple[bytes, int]]:
        """(seed, sign) of every mask this site adds: its self-mask and one per other
        participant of U2 (the sites whose shares were relayed)."""
        terms = [(self.keys.self_seed, 1)]
        for peer in sorted(set(participants) - {self.site}):
            terms.append((self.seed_with(peer), mask_sign(self.site, peer)))
        return terms

    def mask_body(self, body: np.ndarray, participants: Iterable[str], params: LweParameters,
                  start: int = 0) -> None:
        """Add this site's masks to a ciphertext body (uint64 mod q) in place; `start` is the
        body's first slot in the whole vector."""
        if self.site not in set(participants):
            raise MaskingError(f"{self.site} masks only for a round it takes part in")
        apply_mask_terms(body, start, self.mask_terms(participants), params)


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
               advertised: Mapping[str, PublicRoundKeys]) -> tuple[bytes, bytes]:
    """AES key and associated data of the share pair sender -> recipient: both the round share
    keys' and the identity keys' agreement, bound to the round, both names and the key set."""
    binding = context.binding(SHARE_DOMAIN, sender, recipient) + key_set_digest(context,
                                                                                advertised)
    peer_identity = X25519PublicKey.from_public_bytes(SiteIdentity.from_bytes(
        peer.identity).public_raw)
    shared = (keys.share_key.exchange(X25519PublicKey.from_public_bytes(peer.share_public))
              + identity_key.exchange(peer_identity))
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=binding).derive(shared)
    return key, binding


def seal_share_pair(context: MaskingRound, sender_keys: RoundKeys,
                    sender_identity_key: X25519PrivateKey, sender: str, recipient: str,
                    advertised: Mapping[str, PublicRoundKeys], pair: SharePair) -> bytes:
    """A share pair from `sender` readable by `recipient` only (nonce + AES-256-GCM), under the
    key set `advertised` as the sender sees it."""
    key, binding = _share_key(context, sender_keys, sender_identity_key, advertised[recipient],
                              sender, recipient, advertised)
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, pair.to_bytes(), binding)


def open_share_pair(context: MaskingRound, recipient_keys: RoundKeys,
                    recipient_identity_key: X25519PrivateKey, recipient: str, sender: str,
                    advertised: Mapping[str, PublicRoundKeys], sealed: bytes) -> SharePair:
    """Open a share pair sealed for `recipient`; MaskingError if it was made for another
    round, pair of sites, key or key set, by anyone but `sender`, or altered on the way."""
    key, binding = _share_key(context, recipient_keys, recipient_identity_key,
                              advertised[sender], sender, recipient, advertised)
    try:
        plain = AESGCM(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], binding)
    except (InvalidTag, ValueError):
        raise MaskingError(f"the shares {sender} sent {recipient} for round "
                           f"{context.round_number} do not open: altered, replayed from "
                           "another round, sealed under another key, not made by "
                           f"{sender}, or {sender} was shown other round keys than "
                           f"{recipient}") from None
    return SharePair.from_bytes(plain)


@dataclass(frozen=True)
class UnmaskingAnswer:
    """A survivor's answer: shares of the survivors' self-mask seeds and of the dropped
    sites' mask keys, by the site they belong to."""

    self_seeds: dict[str, int]
    mask_keys: dict[str, int]


def answer_unmasking(context: MaskingRound, site: str, received: Mapping[str, SharePair],
                     survivors: Iterable[str], dropped: Iterable[str],
                     answered_before: tuple[frozenset[str], frozenset[str]] | None = None
                     ) -> UnmaskingAnswer:
    """The honest rule: reveal self-mask shares of `survivors`, mask-key shares of `dropped`;
    refuse sets that overlap, leave out this site, fall below t, or differ from the sets
    this site already answered for the round (`answered_before`, which the caller keeps
    durably and writes before sending the answer)."""
    survivors, dropped = frozenset(survivors), frozenset(dropped)
    if survivors & dropped:
        raise MaskingError("a site cannot be both a survivor and dropped: "
                           + ", ".join(sorted(survivors & dropped)))
    if site not in survivors:
        raise MaskingError(f"{site} answers unmasking only as a survivor")
    if len(survivors) < context.threshold:
        raise MaskingError(f"{len(survivors)} survivors are fewer than the threshold "
                           f"{context.threshold}: the round cannot be unmasked")
    if not (survivors | dropped) <= set(context.sites):
        raise MaskingError("unmasking names sites that advertised no keys this round")
    if answered_before is not None and answered_before != (survivors, dropped):
        raise MaskingError(f"round {context.round_number} was already answered for other "
                           "survivors and dropped sites; answering again could reveal both "
                           "secrets of one site")
    missing = sorted((survivors | dropped) - set(received))
    if missing:
        raise MaskingError(f"{site} holds no shares from {', '.join(missing)}")
    return UnmaskingAnswer({u: received[u].self_seed for u in sorted(survivors)},
                           {u: received[u].mask_key for u in sorted(dropped)})


@dataclass(frozen=True)
class RecoveredSecrets:
    """What the central side rebuilds from t answers: survivors' self-mask seeds and dropped
    sites' mask keys (raw X25519 private bytes)."""

    self_seeds: dict[str, bytes]
    mask_keys: dict[str, bytes]


def recover_round_secrets(context: MaskingRound, answers: Mapping[str, UnmaskingAnswer],
                          survivors: Iterable[str], dropped: Iterable[str],
                          advertised: Mapping[str, PublicRoundKeys]) -> RecoveredSecrets:
    """Rebuild the secrets unmasking needs from the survivors' answers (at least t); a
    recovered mask key must match its site's advertised public key."""
    t = context.threshold
    if len(answers) < t:
        raise MaskingError(f"{len(answers)} answers, {t} needed to unmask round "
                           f"{context.round_number}")

    def gather(owner: str, pick: str) -> dict[int, int]:
        return {context.holder(holder): getattr(answer, pick)[owner]
                for holder, answer in answers.items()}

    seeds = {u: recover_secret(gather(u, "self_seeds"), t) for u in sorted(survivors)}
    keys: dict[str, bytes] = {}
    for u in sorted(dropped):
        raw = recover_secret(gather(u, "mask_keys"), t)
        if _raw_public(X25519PrivateKey.from_private_bytes(raw)) != advertised[u].mask_public:
            raise MaskingError(f"the shares of {u}'s mask key do not give the key it advertised")
        keys[u] = raw
    return RecoveredSecrets(seeds, keys)


def unmasking_terms(context: MaskingRound, secrets: RecoveredSecrets,
                    advertised: Mapping[str, PublicRoundKeys], survivors: Iterable[str]
                    ) -> list[tuple[bytes, int]]:
    """(seed, sign) of every mask left in the sum of the survivors' bodies: their self-masks
    and, per (survivor v, dropped d), the pairwise mask v added for d."""
    terms = [(seed, 1) for seed in secrets.self_seeds.values()]
    for dropped, raw in secrets.mask_keys.items():
        key = X25519PrivateKey.from_private_bytes(raw)
        for survivor in sorted(survivors):
            seed = pairwise_seed(context, key, advertised[survivor].mask_public, dropped,
                                 survivor)
            terms.append((seed, mask_sign(survivor, dropped)))
    return terms


def unmask_sum(body: np.ndarray, terms: Iterable[tuple[bytes, int]], params: LweParameters,
               start: int = 0) -> None:
    """Subtract the leftover masks from a summed body (uint64 mod q) in place."""
    apply_mask_terms(body, start, ((seed, -sign) for seed, sign in terms), params)
