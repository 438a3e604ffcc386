"""What the round state machine (`rounds.py`) works with: the federation's fixed settings,
the facts read from a ciphertext header, the sum backend it feeds, the snapshot it answers
with, and the errors that become gRPC statuses."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from ucadi.errors import UcadiError


class RoundState(StrEnum):
    """A round's states (rounds.py draws the machine); stored, logged and exported as their
    lower-case values."""

    COLLECTING = "collecting"
    SEALING = "sealing"
    SEALED = "sealed"
    COMPLETED = "completed"
    UNMASKING = "unmasking"


COLLECTING, SEALING, SEALED, COMPLETED, UNMASKING = (
    RoundState.COLLECTING, RoundState.SEALING, RoundState.SEALED, RoundState.COMPLETED,
    RoundState.UNMASKING)


# Counts a site states (cases, samples, epochs) are stored as SQLite INTEGERs: signed 64-bit.
MAX_COUNT = 2**63 - 1


class FederationStateError(UcadiError):
    """The request does not fit the federation's current state (wrong round, not joined...)."""

    status = "FAILED_PRECONDITION"


class RejectedUpload(UcadiError):
    """An upload refused for a stated reason (metrics label) with a gRPC status."""

    def __init__(self, message: str, reason: str, status: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class CiphertextFacts:
    """What the aggregator can read from a ciphertext's header (no secret needed)."""

    parameter_set: str
    key_id: str
    layout_hash: str
    round: int
    value_count: int


class SumBackend(Protocol):
    """The service that adds ciphertexts (the crypto service's SumService)."""

    def open_round(self, round_number: int) -> None:
        """Prepare an accumulator for a round (idempotent)."""

    def add(self, round_number: int, site: str, path: Path, streamed: Any = None,
            sha256: str = "") -> None:
        """Add a site's accepted ciphertext (stored at `path`, digest `sha256`); a repeat of
        an already added (round, site) is a no-op. `streamed`: what `stream` returned for this
        upload, to be committed instead of sending the file again."""

    def stream(self, round_number: int, site: str, sha256: str = "") -> Any:
        """Start passing an arriving upload on to the sum as its chunks come (`send(chunk)`,
        `abort()`), or None where the backend sums stored files only."""

    def seal(self, round_number: int, out_path: Path, sites: Sequence[str]) -> None:
        """Write the sum of the round's accepted uploads (those of `sites`) to out_path
        (repeatable, same result)."""

    def takes_site_contributions(self) -> bool:
        """Whether sites send their ciphertexts to the sum themselves (then only recorded
        here, once `contribution_digest` shows the sum holds them)."""

    def contribution_digest(self, round_number: int, site: str) -> str | None:
        """Hex SHA-256 of the site's ciphertext the sum holds for the round, or None."""

    def close_round(self, round_number: int, sites: Sequence[str]) -> tuple[int, str] | None:
        """Where sites fetch sums from the sum service themselves: seal like `seal` without
        the bytes, answering the sum's (size, sha256); None elsewhere (then `seal`)."""

    def copy_sum(self, round_number: int, out_path: Path, size: int, sha256: str) -> None:
        """Store a closed round's sum at out_path (fsynced), checked against size and digest."""

    def sum_chunks(self, round_number: int, offset: int) -> Iterator[Any]:
        """A closed round's sum as chunks from `offset`, streamed from the sum service."""


@dataclass(frozen=True)
class FederationConfig:
    """A federation's fixed settings (stored with it, so a restart keeps them)."""

    federation_id: str
    model: dict[str, Any]
    encryption: dict[str, Any]
    min_sites: int = 2
    total_rounds: int = 5
    local_epochs: int = 1
    round_timeout_s: float = 600.0
    liveness_timeout_s: float = 60.0
    max_upload_bytes: int = 1 << 30
    max_site_cases: int = 1000
    # Pairwise masks (docs/design/multiparty.md): on, t (0 = a majority of the round's key
    # set), the neighbour graph's degree k (0 = complete, -1 = "auto": Bell et al.'s choice
    # for the key set's size; ucadi/lwe/neighbours.py) and the seconds each masking phase
    # waits for stragglers.
    pairwise_masks: bool = False
    mask_threshold: int = 0
    mask_neighbours: int = 0
    mask_phase_timeout_s: float = 60.0

    @property
    def weight_unit(self) -> int:
        """Training samples per FedAvg weight unit (JoinResponse.weight_unit)."""
        from ucadi.lwe.codec import weight_unit
        from ucadi.lwe.params import PARAMETER_SETS

        params = PARAMETER_SETS.get(self.encryption.get("parameter_set", ""))
        if params is None:  # encryption off (benchmarks): plaintext weights are not bounded
            return 1
        return weight_unit(self.max_site_cases * self.local_epochs, params.max_site_weight)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


@dataclass
class RoundView:
    """A snapshot of the current round for RPC answers."""

    round: int
    state: str
    base_version: int
    latest_version: int
    deadline: float
    start_epoch: int
    local_epochs: int
    expected: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    min_sites: int = 0
    # UNMASKING (pairwise masks): the sites the sum holds, and the participants that dropped.
    survivors: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
