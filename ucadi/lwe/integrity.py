"""Integrity tags: a sum the central side altered, assembled from the wrong contributions or
made for another round fails a check only key holders can make (security finding 19.3).

The scheme is malleable: whoever holds a ciphertext can add Delta * m' to its body and shift
the decrypted plaintext by m', without the key. So every site appends TAG_SLOTS slots to its
update, computed before encryption from a key the central side does not have:

    tag_j = sum_i r_i(j mod 2) * m_i + t_j(site)   (mod p_j),   j = 0..TAG_SLOTS-1

over its encoded value slots and its weight slot m_i, with coefficients r_ij and a per-site
term t_j(site) that are pseudorandom functions of a round tag key derived from the shared
LWE secret and the round number (AES-256-CTR and HMAC-SHA-256 under that key). Tags are
linear, so the summed tag slots are the tags of the summed slots plus the terms of the sites
that contributed: a site that decrypts a sum recomputes both from the decrypted slots and the
announced contributors and compares.

Why a forgery fails. Decryption is exact, so a tampered sum decrypts to true + d for a shift d
the tamperer chose (|d_i| < 2^P as integers). p_1 p_2 > 2^58 exceeds every P in params.py,
so some d_i is non-zero modulo p_1 or p_2, and each of the two tags under that prime (with
independent coefficients) matches with probability about 1/p over the unknown r: about
p^-2 ~ 2^-58 for one attempt. A different
set of contributions (one dropped, one counted twice, one from another round, a site not
announced) changes the per-site or per-round terms and fails the same way. The central side
sees neither r nor any tag (they are encrypted) and learns only that a forgery failed.

Capacity: each site's tag is below p < 2^29, so a sum over max_sites sites stays below the
plaintext limit (`check_tag_capacity`) and the tag slots never wrap.

Limits: every site holds the key, so a site colluding with the central side can forge; the
tag proves the sum was made by key holders from this round's contributions, not which ones
are honest (docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ucadi.errors import UcadiError
from ucadi.lwe.codec import EncodedUpdate, FixedPointCodec, encode_update
from ucadi.lwe.keys import SecretKey
from ucadi.lwe.params import LweParameters

TAG_DOMAIN = b"ucadi/lwe/sum-tag/v1"
SITE_TERM_LABEL = b"site-term"
# Two tags under each of two primes just below 2^29 (p_1 p_2 > 2^58).
TAG_MODULI = np.array([536870909, 536870909, 536870879, 536870879], dtype=np.uint64)
TAG_SLOTS = TAG_MODULI.size
_COEFFICIENT_MASK = np.uint32((1 << 29) - 1)
_PRIMES = tuple(int(p) for p in np.unique(TAG_MODULI))
_CHUNK = 1 << 20  # slots per pass when tagging an update: bounded temporaries
_BLOCK = 1 << 16  # slots per arithmetic pass: temporaries that stay in cache
_LOW_BITS = 24
_LOW_MASK = np.int64((1 << _LOW_BITS) - 1)
_GROUP = 512  # products below 2^53: 512 of them sum below 2^62 before a reduction


class SumIntegrityError(UcadiError):
    """A decrypted sum failed a check: it must not become a model (status: DATA_LOSS)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # short label for the metric: round, contributors, quorum, tag


def update_slot_count(value_count: int) -> int:
    """Slots of one site's update: its values, the weight slot and the tag slots."""
    return value_count + 1 + TAG_SLOTS


def check_tag_capacity(params: LweParameters) -> None:
    """Raise unless max_sites tags of one site each add up without wrapping."""
    if params.max_sites * int(TAG_MODULI.max()) >= params.plaintext_limit:
        raise UcadiError(f"{params.name}: {params.max_sites} sites' integrity tags could "
                         f"exceed the plaintext limit {params.plaintext_limit}")


def tag_key(secret: SecretKey, round_number: int) -> bytes:
    """The round's tag key: a hash of the shared secret (never sent anywhere) and the round,
    so coefficients differ per round and an old round's contributions fail a new round's
    check."""
    digest = hashlib.sha256(TAG_DOMAIN)
    for part in (secret.key_id, secret.to_bytes(), round_number.to_bytes(8, "big")):
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    return digest.digest()


def _coefficients(key: bytes, start: int, count: int) -> np.ndarray:
    """The two coefficients (r_i1, r_i2) of slots [start, start + count), each below 2^29, as
    (count, 2) uint32: half an AES block per slot, counter = slot index // 2, so any slot
    range is made on its own. The two tags under one prime use the two columns; the tags under
    the other prime reuse them (a forgery is caught under a prime it does not vanish modulo,
    by the two independent columns; nothing relies on independence across the primes)."""
    first = start - start % 2
    blocks = (start + count - first + 1) // 2
    encryptor = Cipher(algorithms.AES(key), modes.CTR((first // 2).to_bytes(16, "big"))
                       ).encryptor()
    words = np.frombuffer(encryptor.update(bytes(16 * blocks)), dtype="<u4")
    offset = 2 * (start - first)
    return (words[offset:offset + 2 * count] & _COEFFICIENT_MASK).reshape(count, 2)


def site_term(key: bytes, site: str) -> np.ndarray:
    """t_j(site): what binds a tag to the site that made it (TAG_SLOTS values mod p_j)."""
    mac = hmac.new(key, SITE_TERM_LABEL + b"\0" + site.encode(), hashlib.sha256).digest()
    return np.frombuffer(mac, dtype="<u8") % TAG_MODULI


@dataclass
class TagAccumulator:
    """sum_i r_ij * m_i (mod p_j) over slots given in any order, range by range."""

    key: bytes
    sums: np.ndarray = field(default_factory=lambda: np.zeros(TAG_SLOTS, dtype=np.uint64))

    def add(self, start: int, slots: np.ndarray) -> None:
        """Fold in the signed slots m[start : start + len(slots)], _BLOCK slots at a time (so
        the temporaries stay in cache)."""
        for first in range(0, slots.size, _BLOCK):
            self._add_block(start + first, slots[first:first + _BLOCK])

    def _add_block(self, start: int, slots: np.ndarray) -> None:
        # m = high * 2^24 + low with 0 <= low < 2^24 and |high| < 2^24 (|m| < 2^48 >= 2^P):
        # every product with a coefficient (< 2^29) is below 2^53 in magnitude, so a group
        # of _GROUP of them sums exactly in int64; only the group sums are reduced mod p.
        # No division touches the slots themselves.
        coefficients = _coefficients(self.key, start, slots.size)
        pad = (-slots.size) % _GROUP
        if pad:
            slots = np.concatenate([slots, np.zeros(pad, dtype=np.int64)])
            coefficients = np.concatenate([coefficients, np.zeros((pad, 2), dtype=np.uint32)])
        limbs = (slots & _LOW_MASK, slots >> _LOW_BITS)
        for column in range(2):
            r = coefficients[:, column].astype(np.int64)
            low, high = (np.multiply(limb, r).reshape(-1, _GROUP).sum(axis=1)
                         for limb in limbs)
            for tag in (column, column + 2):
                prime = np.int64(TAG_MODULI[tag])
                total = int((low % prime).sum()) + (int((high % prime).sum()) << _LOW_BITS)
                self.sums[tag] = (int(self.sums[tag]) + total) % int(prime)


@dataclass(frozen=True)
class TaggedUpdate:
    """A site's encoded update with its tag slots appended (a SlotSource for encryption)."""

    update: EncodedUpdate
    tags: np.ndarray

    @property
    def frac_bits(self) -> int:
        """Fractional bits of the encoding (travels in the ciphertext header)."""
        return self.update.frac_bits

    @property
    def slot_count(self) -> int:
        """Values, the weight slot and the tag slots."""
        return self.update.slot_count + TAG_SLOTS

    def slots(self, start: int, stop: int) -> np.ndarray:
        """Encoded slots [start, stop) as int64."""
        inner = self.update.slot_count
        head = self.update.slots(start, min(stop, inner)) if start < inner else np.empty(
            0, dtype=np.int64)
        if stop <= inner:
            return head
        tail = self.tags[max(start, inner) - inner:stop - inner].astype(np.int64)
        return np.concatenate([head, tail])


def tag_update(update: EncodedUpdate, secret: SecretKey, round_number: int,
               site: str) -> TaggedUpdate:
    """Compute `site`'s tags over its encoded update for `round_number` (one pass over the
    values, _CHUNK slots at a time)."""
    check_tag_capacity(secret.params)
    key = tag_key(secret, round_number)
    accumulator = TagAccumulator(key)
    for start in range(0, update.slot_count, _CHUNK):
        accumulator.add(start, update.slots(start, min(start + _CHUNK, update.slot_count)))
    return TaggedUpdate(update, (accumulator.sums + site_term(key, site)) % TAG_MODULI)


class SumCheck:
    """What a site checks of a decrypted sum before it may become a model: fed the sum's
    value and weight slots range by range (`add`), then its tag slots (`verify`)."""

    def __init__(self, secret: SecretKey, round_number: int,
                 contributors: Sequence[str]) -> None:
        self.round_number = round_number
        self.contributors = tuple(contributors)
        self.key = tag_key(secret, round_number)
        self.accumulator = TagAccumulator(self.key)

    def add(self, start: int, slots: np.ndarray) -> None:
        """Fold in decrypted value/weight slots starting at slot `start`."""
        self.accumulator.add(start, slots)

    def expected_tags(self) -> np.ndarray:
        """The tag slots an untampered sum of the announced contributors carries (mod p)."""
        terms = _sum_terms(site_term(self.key, site) for site in self.contributors)
        return (self.accumulator.sums + terms) % TAG_MODULI

    def verify(self, tag_slots: np.ndarray) -> None:
        """Raise SumIntegrityError unless the decrypted tag slots match."""
        found = np.mod(np.asarray(tag_slots, dtype=np.int64),
                       TAG_MODULI.astype(np.int64)).astype(np.uint64)
        if found.shape != (TAG_SLOTS,) or not np.array_equal(found, self.expected_tags()):
            raise SumIntegrityError(
                f"the sum for round {self.round_number} fails its integrity tag: it was altered "
                "after encryption, or is not the sum of exactly the contributions of "
                f"{', '.join(self.contributors) or 'no site'} for this round "
                "(the central side announced these contributors)", "tag")


def _sum_terms(terms: Iterable[np.ndarray]) -> np.ndarray:
    total = np.zeros(TAG_SLOTS, dtype=np.uint64)
    for term in terms:
        total = (total + term) % TAG_MODULI
    return total


def encode_site_update(values: np.ndarray, weight: int, codec: FixedPointCodec,
                       secret: SecretKey, round_number: int, site: str) -> TaggedUpdate:
    """A federation upload's plaintext: `site`'s validated, weighted values for the round, its
    weight slot and its tags (what SiteCipher encrypts; tools and tests use it directly)."""
    return tag_update(encode_update(values, weight, codec, secret.params), secret,
                      round_number, site)
