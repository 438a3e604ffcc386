"""Pairwise-cancelling masks over ciphertext bodies: no single party reads a site's update
(issue 21; Bonawitz et al., CCS 2017, with double masking; docs/design/multiparty.md).

Every site still encrypts under the shared LWE secret, but before its ciphertext leaves, it
adds to the body, coefficient by coefficient modulo q,

    PRG(self_seed_u) + sum_{v in U2 and N(u)} sign(u, v) PRG(s_uv),   sign = +1 if u < v else -1,

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

N(u), u's neighbours, are every other site of the key set, or with a sparse graph (SecAgg+,
ucadi/lwe/neighbours.py) k of them drawn from the key set's names; u's shares go to N(u) and
itself, t of them recover its secrets, and unmasking rebuilds each site's secrets from its
own neighbourhood's answers.

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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ucadi.lwe.custodian import SiteIdentity
from ucadi.lwe.errors import KeyWrapError
from ucadi.lwe.mask_round import (
    KEY_BYTES,
    MaskingError,
    MaskingRound,
    PublicRoundKeys,
    RoundKeys,
    SharePair,
    default_threshold,
    generate_round_keys,
    key_set_digest,
    open_share_pair,
    raw_private,
    raw_public,
    seal_share_pair,
)
from ucadi.lwe.neighbours import NeighbourGraph, describe_short, round_graph, short_neighbourhoods
from ucadi.lwe.params import LweParameters
from ucadi.lwe.shamir import recover_secret, split_secret

# The round's parties, keys and share pairs live in mask_round; they are used from here too.
__all__ = [
    "KEY_BYTES", "MaskingError", "MaskingRound", "PublicRoundKeys", "RoundKeys", "SharePair",
    "SitePairing", "RecoveredSecrets", "UnmaskingAnswer", "answer_unmasking", "apply_mask_terms",
    "default_threshold", "expand_mask", "generate_round_keys", "key_set_digest", "mask_bits",
    "mask_sign", "open_share_pair", "pairwise_seed", "recover_round_secrets", "seal_share_pair",
    "unmask_sum", "unmasker", "unmasking_terms",
]

PAIR_DOMAIN = b"ucadi/lwe/pairwise-mask/v1"
_MASK_SLICE = 1 << 20  # coefficients expanded at a time: bounded temporaries at 46 M values


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

    @cached_property
    def digest(self) -> bytes:
        """The key set's digest as this site was shown it (made once: every share pair is
        bound to it)."""
        return key_set_digest(self.context, self.advertised)

    @cached_property
    def graph(self) -> NeighbourGraph:
        """The round's neighbour graph, from the key set this site was shown."""
        return round_graph(self.context)

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
                               self.advertised, pair, self.digest)

    def open_from(self, sender: str, sealed: bytes) -> SharePair:
        """The share pair `sender` sealed for this site (see open_share_pair)."""
        return open_share_pair(self.context, self.keys, self.identity_key, self.site, sender,
                               self.advertised, sealed, self.digest)

    def open_all(self, received: Mapping[str, bytes]) -> dict[str, SharePair]:
        """Open every share pair received: MaskingError (naming the sender) if one does not
        open, i.e. its sender saw other keys than this site did, or it was not its sender's."""
        return {sender: self.open_from(sender, sealed) for sender, sealed in received.items()}

    def seed_with(self, peer: str) -> bytes:
        """s_uv with `peer`."""
        return pairwise_seed(self.context, self.keys.mask_key,
                             self.advertised[peer].mask_public, self.site, peer)

    def share_messages(self) -> dict[str, bytes]:
        """For every holder of this site's shares (its neighbours and itself: every site of
        the round with the complete graph), its Shamir shares of this site's self-mask seed
        and mask key, sealed for that site alone."""
        holders = {site: self.context.holder(site)
                   for site in sorted(self.graph.holders(self.site))}
        t = self.context.threshold
        seed_shares = split_secret(self.keys.self_seed, t, list(holders.values()))
        key_shares = split_secret(raw_private(self.keys.mask_key), t, list(holders.values()))
        return {site: self.seal_for(site, SharePair(seed_shares[x], key_shares[x]))
                for site, x in holders.items()}

    def mask_terms(self, participants: Iterable[str]) -> list[tuple[bytes, int]]:
        """(seed, sign) of every mask this site adds: its self-mask and one per neighbour
        in U2 (the sites whose shares were relayed)."""
        terms = [(self.keys.self_seed, 1)]
        for peer in sorted(set(participants) & self.graph.neighbours(self.site)):
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
class UnmaskingAnswer:
    """A survivor's answer: shares of the survivors' self-mask seeds and of the dropped
    sites' mask keys, by the site they belong to."""

    self_seeds: dict[str, int]
    mask_keys: dict[str, int]


def answer_unmasking(context: MaskingRound, site: str, received: Mapping[str, SharePair],
                     survivors: Iterable[str], dropped: Iterable[str],
                     answered_before: tuple[frozenset[str], frozenset[str]] | None = None,
                     graph: NeighbourGraph | None = None) -> UnmaskingAnswer:
    """The honest rule: reveal self-mask shares of `survivors`, mask-key shares of `dropped`
    (of those whose shares this site holds: its neighbours and itself in `graph`, default
    the complete graph); refuse sets that overlap, leave out this site, fall below t, or
    differ from the sets this site already answered for the round (`answered_before`, which
    the caller keeps durably and writes before sending the answer)."""
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
    if graph is None and context.neighbours:
        raise MaskingError(f"round {context.round_number} has a sparse neighbour graph: an "
                           "answer needs it (SitePairing.graph)")
    graph = graph or NeighbourGraph.complete(context.sites)
    survivors, dropped = survivors & graph.holders(site), dropped & graph.neighbours(site)
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
    """Rebuild the secrets unmasking needs from the survivors' answers (at least t, and at
    least t from each site's neighbourhood); a recovered mask key must match its site's
    advertised public key."""
    t = context.threshold
    if len(answers) < t:
        raise MaskingError(f"{len(answers)} answers, {t} needed to unmask round "
                           f"{context.round_number}")
    short = short_neighbourhoods(round_graph(context), t, survivors, dropped, answers)
    if short:
        raise MaskingError(f"round {context.round_number} cannot be unmasked: too few "
                           f"answering holders of the shares of {describe_short(short, t)}")

    def gather(owner: str, pick: str) -> dict[int, int]:
        return {context.holder(holder): getattr(answer, pick)[owner]
                for holder, answer in answers.items() if owner in getattr(answer, pick)}

    seeds = {u: recover_secret(gather(u, "self_seeds"), t) for u in sorted(survivors)}
    keys: dict[str, bytes] = {}
    for u in sorted(dropped):
        raw = recover_secret(gather(u, "mask_keys"), t)
        if raw_public(X25519PrivateKey.from_private_bytes(raw)) != advertised[u].mask_public:
            raise MaskingError(f"the shares of {u}'s mask key do not give the key it advertised")
        keys[u] = raw
    return RecoveredSecrets(seeds, keys)


def unmasking_terms(context: MaskingRound, secrets: RecoveredSecrets,
                    advertised: Mapping[str, PublicRoundKeys], survivors: Iterable[str]
                    ) -> list[tuple[bytes, int]]:
    """(seed, sign) of every mask left in the sum of the survivors' bodies: their self-masks
    and, per (survivor v, dropped neighbour d of v), the pairwise mask v added for d."""
    graph = round_graph(context)
    terms = [(seed, 1) for seed in secrets.self_seeds.values()]
    for dropped, raw in secrets.mask_keys.items():
        key = X25519PrivateKey.from_private_bytes(raw)
        for survivor in sorted(set(survivors) & graph.neighbours(dropped)):
            seed = pairwise_seed(context, key, advertised[survivor].mask_public, dropped,
                                 survivor)
            terms.append((seed, mask_sign(survivor, dropped)))
    return terms


def unmask_sum(body: np.ndarray, terms: Iterable[tuple[bytes, int]], params: LweParameters,
               start: int = 0) -> None:
    """Subtract the leftover masks from a summed body (uint64 mod q) in place."""
    apply_mask_terms(body, start, ((seed, -sign) for seed, sign in terms), params)


def unmasker(terms: Iterable[tuple[bytes, int]], params: LweParameters
             ) -> Callable[[np.ndarray, int], None]:
    """`unmask_sum` over body batches (the decryption's `unmask` callback): removes the masks
    left in a sealed sum (GetUnmasking's terms) from a batch that starts at coefficient
    `first`."""
    terms = list(terms)
    return lambda batch, first: unmask_sum(batch, terms, params, first)
