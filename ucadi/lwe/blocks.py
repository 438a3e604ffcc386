"""Block and batch arithmetic every part of the scheme shares.

A vector of slots is cut into blocks of N = ring degree slots (one ring element each); work is
done BATCH_BLOCKS blocks at a time, so temporaries stay a few MB whatever the model size; a
ciphertext's coefficients are added modulo q = 2^Q in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# 16 blocks of 4096 slots: a few MB of FFT temporaries whatever the model size.
BATCH_BLOCKS = 16


def ceil_div(numerator: int, denominator: int) -> int:
    """The smallest integer >= numerator / denominator (positive denominator)."""
    return -(-numerator // denominator)


@dataclass(frozen=True)
class Batch:
    """BATCH_BLOCKS (or fewer, at the end) consecutive blocks and the slots they hold."""

    first_block: int
    blocks: int
    first_slot: int
    stop_slot: int

    @property
    def slots(self) -> int:
        """Number of real slots in the batch (the last block may be partial)."""
        return self.stop_slot - self.first_slot


def batches(slot_count: int, ring_degree: int, block_start: int = 0,
            block_stop: int | None = None) -> Iterator[Batch]:
    """The batches covering blocks [block_start, block_stop) (default: every block) of a
    vector of `slot_count` slots."""
    stop = ceil_div(slot_count, ring_degree) if block_stop is None else block_stop
    for first in range(block_start, stop, BATCH_BLOCKS):
        blocks = min(BATCH_BLOCKS, stop - first)
        yield Batch(first, blocks, first * ring_degree,
                    min((first + blocks) * ring_degree, slot_count))


def add_into(total: np.ndarray, body: np.ndarray, modulus_mask: int) -> None:
    """total += body (mod q = modulus_mask + 1), in place, uint64 coefficients."""
    total += body
    total &= np.uint64(modulus_mask)
