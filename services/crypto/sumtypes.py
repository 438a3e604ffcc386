"""The sum service's value types: a round's state and specification, its sealed sum, and the
checks a specification must pass (services/crypto/sumstore.py keeps the rounds)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

import numpy as np

from ucadi.errors import UcadiError
from ucadi.lwe.blocks import add_into, ceil_div
from ucadi.lwe.params import get_parameters
from ucadi.lwe.scheme import Ciphertext, CiphertextHeader
from ucadi.lwe.serialization import serialize
from ucadi.v1 import common_pb2
from ucadi.wire.chunks import file_digest, iter_file_chunks, iter_payload_chunks

# Round numbers and slot counts are stored as SQLite INTEGERs: signed 64-bit.
MAX_STORED_INTEGER = 2**63 - 1
FEDERATION_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class SumRoundState(StrEnum):
    """A round at the sum service: open to contributions, or sealed into its sum."""

    OPEN = "open"
    SEALED = "sealed"


class RoundNotFoundError(UcadiError):
    """The round was never opened on this sum service."""

    status = "NOT_FOUND"


class RoundStateError(UcadiError):
    """The round exists but is not in a state that allows this call."""

    status = "FAILED_PRECONDITION"


class DuplicateSiteError(UcadiError):
    """The site already contributed to this round."""

    status = "ALREADY_EXISTS"


@dataclass(frozen=True)
class RoundSpec:
    """What a round accepts."""

    federation: str
    round: int
    key_id: str
    parameter_set: str
    layout_hash: bytes
    slot_count: int
    block_start: int
    block_stop: int

    def expected_header(self) -> CiphertextHeader:
        """Header every contribution must carry (frac_bits is checked against the first)."""
        params = get_parameters(self.parameter_set)
        return CiphertextHeader(params.set_id, bytes.fromhex(self.key_id), self.layout_hash,
                                self.round, 0, self.slot_count, self.block_start,
                                self.block_stop, 1, params.contribution_drop_bits)


@dataclass(frozen=True)
class RoundState:
    """A round's spec, state, contributors and, once sealed, its sum file."""

    spec: RoundSpec
    state: SumRoundState
    sites: tuple[str, ...]
    accumulator: Path | None
    contributions: tuple[Path, ...] = ()
    # Hex SHA-256 of each contribution, in the order of `sites`.
    digests: tuple[str, ...] = ()


@dataclass(frozen=True)
class SealedSum:
    """A sealed round and its sum: the stored file, or (until the background writer has stored
    it) the serialized bytes and their SHA-256."""

    state: RoundState | None  # None where only the sum was asked for (`fetch`)
    path: Path | None = None
    data: memoryview | None = None
    sha256: str | None = None

    def size_and_digest(self) -> tuple[int, str]:
        """Bytes and hex SHA-256 of the serialized sum."""
        if self.path is not None:
            return self.path.stat().st_size, file_digest(self.path)
        assert self.data is not None and self.sha256 is not None
        return len(self.data), self.sha256

    def chunks(self, chunk_bytes: int, offset: int = 0) -> Iterator[common_pb2.Chunk]:
        """The serialized sum as a chunk stream from `offset`."""
        if self.path is not None:
            return iter_file_chunks(self.path, chunk_bytes, offset=offset)
        assert self.data is not None  # a seal refuses rounds without contributions
        return iter_payload_chunks(self.data, chunk_bytes, offset=offset, sha256=self.sha256)


def serialize_sum(total: Ciphertext) -> tuple[memoryview, str]:
    """(the sum as a ciphertext file's bytes, rounded to the parameter set's sum width, and the
    SHA-256 hex of those bytes)."""
    header = replace(total.header, dropped_bits=total.header.params.sum_drop_bits)
    return serialize(replace(total, header=header))


def _add_into(body: np.ndarray, batches: Iterable[np.ndarray], header: CiphertextHeader) -> None:
    """body += a ciphertext's body (mod q), batch by batch, in place."""
    position = 0
    for batch in batches:
        add_into(body[position:position + batch.size], batch, header.params.modulus_mask)
        position += batch.size


def validate_spec(spec: RoundSpec) -> RoundSpec:
    """Check a round spec; resolve block_stop 0 to the last block."""
    if not FEDERATION_PATTERN.match(spec.federation):
        raise UcadiError(f"federation {spec.federation!r} must be 1-64 of [A-Za-z0-9._-]")
    if not re.fullmatch(r"[0-9a-f]{32}", spec.key_id):
        raise UcadiError(f"key id {spec.key_id!r} must be 32 lower-case hex characters")
    if len(spec.layout_hash) != 32 or not 1 <= spec.slot_count <= MAX_STORED_INTEGER \
            or not 0 <= spec.round <= MAX_STORED_INTEGER:
        raise UcadiError("layout_hash must be 32 bytes, slot_count between 1 and 2^63-1 and "
                         "round between 0 and 2^63-1")
    params = get_parameters(spec.parameter_set)
    total = ceil_div(spec.slot_count, params.ring_degree)
    stop = spec.block_stop or total
    if not 0 <= spec.block_start < stop <= total:
        raise UcadiError(f"block range [{spec.block_start}, {stop}) is not inside the "
                         f"{total} blocks of {spec.slot_count} slots")
    return replace(spec, block_stop=stop)
