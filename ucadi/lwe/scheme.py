"""Symmetric ring-LWE with seeded `a`: encrypt, add, decrypt (pure functions on numpy arrays).

A ciphertext of slots m (int64, one per value) is, block by block of N = ring degree slots,
    b_i = a_i * s + e_i + Delta * m_i   (mod q = 2^Q, in Z_q[x]/(x^N + 1)),
with a_i expanded from ONE fresh 32-byte seed per ciphertext (see sampling.expand_uniform), so
the ciphertext is the seed plus Q bits per slot. The sum of K ciphertexts carries the K seeds
and the summed b; decryption expands and adds the K a's and multiplies by s once per block.
Only the b coefficients of real slots are kept: the tail of the last block is never sent.

Everything works on a block range [block_start, block_stop) so replicas can each own a shard
and memory stays bounded: at most BATCH_BLOCKS blocks of temporaries exist at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from ucadi.lwe.blocks import BATCH_BLOCKS, add_into, batches, ceil_div
from ucadi.lwe.errors import (
    CiphertextMismatchError,
    DuplicateContributionError,
    EncodingError,
)
from ucadi.lwe.keys import SecretKey
from ucadi.lwe.params import LweParameters, get_parameters
from ucadi.lwe.ring import multiply_by_secret
from ucadi.lwe.sampling import ErrorSampler, expand_uniform, fresh_seed

LAYOUT_HASH_BYTES = 32


class SlotSource(Protocol):
    """Plaintext slots produced range by range (an EncodedUpdate, or PlainSlots)."""

    @property
    def slot_count(self) -> int:
        """Number of plaintext slots."""
        ...

    @property
    def frac_bits(self) -> int:
        """Fractional bits of the fixed-point encoding (0 for raw integers)."""
        ...

    def slots(self, start: int, stop: int) -> np.ndarray:
        """Encoded slots [start, stop) as int64."""
        ...


class PreparedMask(Protocol):
    """The message-independent part of one encryption, made ahead (prepared.EncryptionMask):
    uint64 coefficients mod q in batches of BATCH_BLOCKS blocks."""

    batches: list[np.ndarray]


class PreparedProduct(Protocol):
    """(sum of the expected seeds' a) * s, made ahead (prepared.DecryptionProduct)."""

    seeds: frozenset[bytes]
    values: np.ndarray

    def fits(self, header: CiphertextHeader) -> bool:
        """Whether it was made for this ciphertext's key, round and length."""
        ...


@dataclass(frozen=True)
class PlainSlots:
    """Raw integer slots (already encoded) as a SlotSource."""

    values: np.ndarray
    frac_bits: int = 0

    @property
    def slot_count(self) -> int:
        """Number of slots."""
        return int(self.values.size)

    def slots(self, start: int, stop: int) -> np.ndarray:
        """Slots [start, stop) as int64."""
        return np.asarray(self.values[start:stop], dtype=np.int64)


@dataclass(frozen=True)
class CiphertextHeader:
    """What a ciphertext is: every field must match for two ciphertexts to be added."""

    parameter_set: int
    key_id: bytes
    layout_hash: bytes
    round_number: int
    frac_bits: int
    slot_count: int
    block_start: int
    block_stop: int
    contributors: int
    # Low bits of each coefficient rounded away when serialized (and already, if it was read
    # from bytes): the parameter set's contribution_drop_bits for one site's ciphertext, its
    # sum_drop_bits for a sum (params.py bounds the noise this adds).
    dropped_bits: int = 0

    @property
    def params(self) -> LweParameters:
        """The parameter set this ciphertext uses."""
        return get_parameters(self.parameter_set)

    @property
    def total_blocks(self) -> int:
        """Blocks of the whole vector (all shards)."""
        return ceil_div(self.slot_count, self.params.ring_degree)

    @property
    def slot_range(self) -> tuple[int, int]:
        """[first, stop) slots this (possibly partial) ciphertext carries."""
        n = self.params.ring_degree
        return self.block_start * n, min(self.block_stop * n, self.slot_count)

    @property
    def body_slots(self) -> int:
        """Number of b coefficients in the body."""
        first, stop = self.slot_range
        return stop - first

    def check_compatible(self, other: CiphertextHeader) -> None:
        """Raise CiphertextMismatchError unless `other` can be added to this ciphertext."""
        for name in ("parameter_set", "key_id", "layout_hash", "round_number", "frac_bits",
                     "slot_count", "block_start", "block_stop"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                show = (lambda v: v.hex()) if isinstance(mine, bytes) else repr
                raise CiphertextMismatchError(
                    f"ciphertexts differ in {name}: {show(mine)} vs {show(theirs)}; only "
                    "ciphertexts of the same key, parameters, layout, round and block range add")


@dataclass(frozen=True, eq=False)
class Ciphertext:
    """A (possibly summed, possibly partial) ciphertext held in memory."""

    header: CiphertextHeader
    seeds: tuple[bytes, ...]
    body: np.ndarray


def check_key(secret: SecretKey, header: CiphertextHeader) -> None:
    """Raise CiphertextMismatchError unless the ciphertext was made under this key."""
    if header.key_id != secret.key_id or header.parameter_set != secret.params.set_id:
        raise CiphertextMismatchError(
            f"ciphertext is under key {header.key_id.hex()} ({header.params.name}); this secret "
            f"is key {secret.key_id_hex} ({secret.params.name}): fetch the matching key")


def check_contribution(header: CiphertextHeader) -> None:
    """Raise CiphertextMismatchError unless this is one site's ciphertext, rounded no more than
    its parameter set allows a contribution (more would break the sum's noise bound)."""
    params = header.params
    if header.contributors != 1:
        raise CiphertextMismatchError("a contribution must be one site's ciphertext, not a sum "
                                      f"of {header.contributors}")
    if header.dropped_bits != params.contribution_drop_bits:
        raise CiphertextMismatchError(
            f"a contribution under {params.name} drops {params.contribution_drop_bits} low "
            f"bits per coefficient ({params.contribution_bits}-bit body), this one drops "
            f"{header.dropped_bits}")


def _check_plaintext_range(slots: np.ndarray, params: LweParameters) -> None:
    # One site's share of the plaintext space: a sum of up to max_sites contributions then
    # cannot wrap around the P-bit plaintext (it would decrypt to a wrong value, silently).
    limit = params.plaintext_limit // params.max_sites
    if slots.size and (slots.min() < -limit or slots.max() >= limit):
        raise EncodingError(f"plaintext slots must lie in [{-limit}, {limit - 1}] for "
                            f"{params.name} (a sum of {params.max_sites} sites must not wrap); "
                            "encode values with FixedPointCodec first")


def mask_batch(secret: SecretKey, seed: bytes, errors: ErrorSampler, first: int, count: int,
                slots: int) -> np.ndarray:
    """a*s + e (uint64, not yet reduced) of `count` blocks from block `first`, cut to `slots`
    values: only the real slots' coefficients are kept, the tail of a last block is never sent.
    """
    params = secret.params
    a = expand_uniform(seed, first, count, params.ring_degree, params.modulus_bits)
    b = multiply_by_secret(a, secret.spectrum, params.modulus_bits).reshape(-1)[:slots]
    b += errors.sample((slots,)).view(np.uint64)
    return b


def iter_encrypted_batches(secret: SecretKey, source: SlotSource, seed: bytes,
                           block_start: int, block_stop: int,
                           mask: PreparedMask | None = None) -> Iterator[np.ndarray]:
    """b coefficients (uint64) of blocks [block_start, block_stop), BATCH_BLOCKS at a time;
    with a prepared `mask` (made from `seed`, already claimed; whole vectors only), b is one
    addition per slot."""
    if mask is not None and block_start != 0:
        raise EncodingError("a prepared mask encrypts a whole vector, from block 0")
    params = secret.params
    n, reduce = params.ring_degree, np.uint64(params.modulus_mask)
    errors = ErrorSampler()
    for batch in batches(source.slot_count, n, block_start, block_stop):
        first, count = batch.first_block, batch.blocks
        plain = source.slots(batch.first_slot, batch.stop_slot)
        _check_plaintext_range(plain, params)
        if mask is None:
            b = mask_batch(secret, seed, errors, first, count, plain.size)
        else:
            b = mask.batches[(first - block_start) // BATCH_BLOCKS]  # single-use: in place
        b += plain.view(np.uint64) << np.uint64(params.delta_bits)
        b &= reduce
        yield b


def new_header(secret: SecretKey, source: SlotSource, layout_hash: bytes,
               round_number: int) -> CiphertextHeader:
    """Header of a fresh, whole-vector ciphertext of `source` under `secret`."""
    if len(layout_hash) != LAYOUT_HASH_BYTES:
        raise EncodingError(f"layout hash must be {LAYOUT_HASH_BYTES} bytes (SHA-256), "
                            f"got {len(layout_hash)}")
    if not 0 <= round_number < 1 << 63:
        raise EncodingError(f"round must be a non-negative 63-bit integer, got {round_number}")
    if source.slot_count < 1:
        raise EncodingError("nothing to encrypt: the vector has no slots")
    params = secret.params
    blocks = ceil_div(source.slot_count, params.ring_degree)
    return CiphertextHeader(params.set_id, secret.key_id, bytes(layout_hash), round_number,
                            source.frac_bits, source.slot_count, 0, blocks, 1,
                            params.contribution_drop_bits)


def encrypt(secret: SecretKey, source: SlotSource, *, layout_hash: bytes,
            round_number: int) -> Ciphertext:
    """Encrypt all slots of `source` under `secret` with a fresh seed and fresh errors."""
    header = new_header(secret, source, layout_hash, round_number)
    seed = fresh_seed()
    batches = iter_encrypted_batches(secret, source, seed, 0, header.block_stop)
    return Ciphertext(header, (seed,), np.concatenate(list(batches)))


def merged_seeds(headers_seeds: Iterable[tuple[CiphertextHeader, Sequence[bytes]]]
                 ) -> tuple[CiphertextHeader, tuple[bytes, ...]]:
    """Check that ciphertexts can be summed; return the sum's header and sorted seed list."""
    pairs = list(headers_seeds)
    if not pairs:
        raise CiphertextMismatchError("nothing to add: no ciphertexts given")
    first = pairs[0][0]
    seeds: list[bytes] = []
    for header, ct_seeds in pairs:
        first.check_compatible(header)
        seeds.extend(ct_seeds)
    if len(set(seeds)) != len(seeds):
        raise DuplicateContributionError(
            "the same encryption appears twice in this sum (repeated seed); each site's "
            "ciphertext may be added once")
    params = first.params
    if len(seeds) > params.max_sites:
        raise CiphertextMismatchError(
            f"a sum of {len(seeds)} contributions exceeds {params.name}'s limit of "
            f"{params.max_sites}, beyond which exact decryption is not guaranteed")
    return (replace(first, contributors=len(seeds), dropped_bits=params.sum_drop_bits),
            tuple(sorted(seeds)))


def add_bodies(bodies: Iterable[np.ndarray], params: LweParameters) -> np.ndarray:
    """Coefficient-wise sum mod q of equally shaped b arrays."""
    iterator = iter(bodies)
    total = np.array(next(iterator), dtype=np.uint64, copy=True)
    for body in iterator:
        add_into(total, body, params.modulus_mask)
    return total


def add(ciphertexts: Sequence[Ciphertext]) -> Ciphertext:
    """The homomorphic sum: decrypts to the sum of the plaintexts, exactly."""
    header, seeds = merged_seeds((ct.header, ct.seeds) for ct in ciphertexts)
    return Ciphertext(header, seeds, add_bodies((ct.body for ct in ciphertexts), header.params))


def decode_phase(phase: np.ndarray, params: LweParameters) -> np.ndarray:
    """Round phases (b - a*s mod q, uint64) to the nearest multiple of Delta -> signed slots."""
    # Adding Delta/2 then keeping the top P of the Q bits rounds to the nearest multiple; the
    # left shift drops everything above bit Q and the arithmetic right shift sign-extends the
    # P-bit two's-complement result.
    rounded = phase + np.uint64(params.delta // 2)
    rounded <<= np.uint64(64 - params.modulus_bits)
    return rounded.view(np.int64) >> np.int64(64 - params.plaintext_bits)


def sum_of_a(seeds: Sequence[bytes], first: int, count: int, params: LweParameters
             ) -> np.ndarray:
    """The sum mod q of the public polynomials of `seeds` over blocks [first, first + count)."""
    # Expand at 64 bits and reduce once: (sum of a mod 2^64) mod q = sum of (a mod q) mod q.
    n = params.ring_degree
    total = expand_uniform(seeds[0], first, count, n, 64)
    for seed in seeds[1:]:
        total += expand_uniform(seed, first, count, n, 64)
    total &= np.uint64(params.modulus_mask)
    return total


def iter_decrypted_batches(secret: SecretKey, header: CiphertextHeader, seeds: Sequence[bytes],
                           body_batches: Iterable[np.ndarray],
                           product: PreparedProduct | None = None) -> Iterator[np.ndarray]:
    """Signed slots, batch by batch, from the body split into BATCH_BLOCKS-block batches.

    `product`: (sum of a)*s prepared ahead for the seeds this sum was expected to carry
    (prepared.prepare_product); only the difference between those seeds and the actual ones,
    if any, is multiplied here, so a sum of exactly the expected contributors costs one
    subtraction per slot instead of a ring product.
    """
    check_key(secret, header)
    params = secret.params
    n = params.ring_degree
    extra: list[bytes] = []
    missing: list[bytes] = []
    if product is not None and product.fits(header):
        extra = [seed for seed in seeds if seed not in product.seeds]
        missing = [seed for seed in product.seeds if seed not in seeds]
    else:
        product = None
    first = header.block_start
    for body in body_batches:
        count = ceil_div(body.size, n)
        if product is None:
            a_sum = sum_of_a(seeds, first, count, params)
            mask_s = multiply_by_secret(a_sum, secret.spectrum, params.modulus_bits).reshape(-1)
            phase = body - mask_s[:body.size]
        else:
            phase = body - product.values[first * n:first * n + body.size]
            if extra or missing:
                a_diff = sum_of_a(extra, first, count, params) if extra else 0
                if missing:
                    a_diff = a_diff - sum_of_a(missing, first, count, params)
                a_diff = np.asarray(a_diff, dtype=np.uint64) & np.uint64(params.modulus_mask)
                phase -= multiply_by_secret(a_diff, secret.spectrum,
                                            params.modulus_bits).reshape(-1)[:body.size]
        yield decode_phase(phase, params)
        first += count


def split_batches(body: np.ndarray, ring_degree: int) -> Iterator[np.ndarray]:
    """A body cut into BATCH_BLOCKS-block pieces."""
    step = BATCH_BLOCKS * ring_degree
    for start in range(0, body.size, step):
        yield body[start:start + step]


def decrypt(secret: SecretKey, ciphertext: Ciphertext) -> np.ndarray:
    """The (summed) plaintext slots of the ciphertext's slot range, int64."""
    batches = split_batches(ciphertext.body, secret.params.ring_degree)
    return np.concatenate(list(iter_decrypted_batches(secret, ciphertext.header,
                                                      ciphertext.seeds, batches)))
