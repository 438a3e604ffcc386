"""Work a site does before its update or the round's sum exists, so that encrypting at upload
time and decrypting the global sum are each one pass of additions.

- `EncryptionMask` (a*s + e of one future encryption): made while the site trains.
- `round_seed`: the public seed of a site's ciphertext in a round, derived from names everyone
  in the federation knows (key id, federation, round, site). Every site can then compute, while
  it trains, the product (sum of the expected sites' a) * s that decrypting the round's sum
  needs: `DecryptionProduct`. Decryption subtracts it and multiplies only the difference if the
  sum's contributors are not exactly the expected ones (a straggler dropped, a site that
  encrypted under a fresh random seed).

Why a derived seed is safe: `a` is public in every ciphertext anyway; ring-LWE needs it
uniformly random and never used twice with the same secret. The seed is a SHA-256 of fields no
two encryptions share as long as a site encrypts under its derived seed at most once per key,
federation and round, which the site's ledger enforces durably before the mask is made (a
second encryption in the same round falls back to a fresh random seed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ucadi.lwe.blocks import batches
from ucadi.lwe.errors import EncodingError
from ucadi.lwe.keys import SecretKey
from ucadi.lwe.ring import multiply_by_secret
from ucadi.lwe.sampling import SEED_BYTES, ErrorSampler, fresh_seed
from ucadi.lwe.scheme import CiphertextHeader, mask_batch, sum_of_a

ROUND_SEED_DOMAIN = b"ucadi/lwe/round-seed/v1"


def round_seed(key_id: bytes, federation: str, round_number: int, site: str) -> bytes:
    """The public seed of `site`'s ciphertext in `round_number` (see the module docstring)."""
    digest = hashlib.sha256(ROUND_SEED_DOMAIN)
    for field in (key_id, federation.encode(), round_number.to_bytes(8, "big"), site.encode()):
        digest.update(len(field).to_bytes(4, "big"))
        digest.update(field)
    return digest.digest()[:SEED_BYTES]


@dataclass
class EncryptionMask:
    """The message-independent part a*s + e of ONE future whole-vector encryption.

    Encryption is b = (a*s + e) + Delta*m: everything but the addition can be done before the
    update exists, while the site trains, so encrypting at upload time is one addition. A mask
    is as secret as the update it will hide (b minus the mask is Delta*m), lives only in memory
    and is consumed by its one use: reusing it would reveal the difference of two updates.
    """

    key_id: bytes
    seed: bytes
    # uint64 coefficients reduced mod q, one per slot, in batches of BATCH_BLOCKS blocks (the
    # batches encryption walks through, so nothing is copied into one large array).
    batches: list[np.ndarray]
    used: bool = False

    @property
    def slot_count(self) -> int:
        """Slots this mask can encrypt."""
        return sum(batch.size for batch in self.batches)

    def take(self, secret: SecretKey, slot_count: int) -> EncryptionMask:
        """Claim the mask for an encryption under `secret` of `slot_count` slots."""
        if self.used:
            raise EncodingError("this encryption mask was already used; a mask hides exactly "
                                "one update (prepare a new one)")
        if self.key_id != secret.key_id or self.slot_count != slot_count:
            raise EncodingError(f"mask made for key {self.key_id.hex()[:8]} and "
                                f"{self.slot_count} slots cannot encrypt {slot_count} slots "
                                f"under key {secret.key_id_hex[:8]}")
        self.used = True
        return self


def prepare_mask(secret: SecretKey, slot_count: int, seed: bytes | None = None
                 ) -> EncryptionMask:
    """Make the mask of one future encryption of `slot_count` slots: fresh errors, and a fresh
    random seed unless the caller passes a round seed it has claimed for this one use."""
    if slot_count < 1:
        raise EncodingError("nothing to encrypt: the vector has no slots")
    if seed is not None and len(seed) != SEED_BYTES:
        raise EncodingError(f"a seed is {SEED_BYTES} bytes, got {len(seed)}")
    params = secret.params
    n, reduce = params.ring_degree, np.uint64(params.modulus_mask)
    seed, errors = seed or fresh_seed(), ErrorSampler()
    made = []
    for batch in batches(slot_count, n):
        coefficients = mask_batch(secret, seed, errors, batch.first_block, batch.blocks,
                                  batch.slots)
        coefficients &= reduce
        made.append(coefficients)
    return EncryptionMask(secret.key_id, seed, made)


@dataclass(frozen=True, eq=False)
class DecryptionProduct:
    """(sum of the a of `seeds`) * s for every slot of one round's whole-vector sum.

    As secret as the sum's plaintext (the sum's b minus it is the plaintext), so it stays in
    the site's memory like the key.
    """

    key_id: bytes
    round_number: int
    slot_count: int
    seeds: frozenset[bytes]
    # uint64 mod q, one per slot.
    values: np.ndarray

    def fits(self, header: CiphertextHeader) -> bool:
        """Whether this product belongs to the ciphertext's key, round and vector length."""
        return (header.key_id, header.round_number, header.slot_count) == (
            self.key_id, self.round_number, self.slot_count)


def prepare_product(secret: SecretKey, slot_count: int, round_number: int,
                    seeds: Sequence[bytes]) -> DecryptionProduct:
    """The decryption product of a future sum of ciphertexts made under `seeds`."""
    if slot_count < 1 or not seeds:
        raise EncodingError("a decryption product needs slots and at least one seed")
    params = secret.params
    n = params.ring_degree
    values = np.empty(slot_count, dtype=np.uint64)
    for batch in batches(slot_count, n):
        a_sum = sum_of_a(list(seeds), batch.first_block, batch.blocks, params)
        product = multiply_by_secret(a_sum, secret.spectrum, params.modulus_bits)
        values[batch.first_slot:batch.stop_slot] = product.reshape(-1)[:batch.slots]
    return DecryptionProduct(secret.key_id, round_number, slot_count, frozenset(seeds), values)
