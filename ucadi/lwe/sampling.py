"""Randomness of the scheme, all from the OS CSPRNG (never numpy's PRNG).

- The public polynomials `a` are expanded from a ciphertext's 32-byte seed with AES-256-CTR;
  block i of the ciphertext starts at counter i * (bytes per block / 16), so any block range
  can be expanded on its own (sum-service shards, block-wise decryption) and blocks never
  share keystream.
- Errors come from an AES-256-CTR stream keyed by a fresh os.urandom(32) per encryption,
  as centred binomial samples (see params.ERROR_ETA).
- The ternary secret comes from os.urandom directly.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ucadi.lwe.params import ERROR_ETA

SEED_BYTES = 32
_AES_BLOCK_BYTES = 16
_ETA_MASK = np.uint64((1 << ERROR_ETA) - 1)


def _keystream(key: bytes, counter: int, nbytes: int) -> bytes:
    """nbytes of AES-256-CTR keystream starting at 128-bit block `counter`."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(counter.to_bytes(16, "big"))).encryptor()
    return encryptor.update(bytes(nbytes))


def fresh_seed() -> bytes:
    """A new 32-byte seed from the OS CSPRNG."""
    return os.urandom(SEED_BYTES)


def expand_uniform(seed: bytes, first_block: int, block_count: int, ring_degree: int,
                   modulus_bits: int) -> np.ndarray:
    """The uniform polynomials a_i mod 2^Q of blocks [first_block, first_block + block_count)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
    block_bytes = ring_degree * 8
    counter = first_block * (block_bytes // _AES_BLOCK_BYTES)
    words = np.frombuffer(_keystream(seed, counter, block_count * block_bytes), dtype="<u8")
    words = words.reshape(block_count, ring_degree).copy()
    if modulus_bits < 64:
        words &= np.uint64((1 << modulus_bits) - 1)
    return words


class ErrorSampler:
    """Centred-binomial errors in [-ERROR_ETA, ERROR_ETA] from a fresh CSPRNG stream."""

    def __init__(self) -> None:
        self._encryptor = Cipher(algorithms.AES(os.urandom(32)),
                                 modes.CTR(bytes(16))).encryptor()

    def sample(self, shape: tuple[int, ...]) -> np.ndarray:
        """Errors as int64 of the given shape; every call consumes fresh keystream."""
        count = int(np.prod(shape))
        words = np.frombuffer(self._encryptor.update(bytes(8 * count)), dtype="<u8")
        ones = np.bitwise_count(words & _ETA_MASK).astype(np.int64)
        ones -= np.bitwise_count((words >> np.uint64(ERROR_ETA)) & _ETA_MASK)
        return ones.reshape(shape)


def sample_ternary(ring_degree: int) -> np.ndarray:
    """A uniform ternary polynomial in {-1, 0, 1}^N (int8) from os.urandom, by rejection."""
    values = np.empty(0, dtype=np.int8)
    while values.size < ring_degree:
        raw = np.frombuffer(os.urandom(2 * ring_degree), dtype=np.uint8)
        raw = raw[raw < 255]  # 255 = 3 * 85: keep bytes whose residue mod 3 is uniform
        values = np.concatenate([values, (raw % 3).astype(np.int8) - 1])
    return values[:ring_degree].copy()
