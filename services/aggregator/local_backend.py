"""SumBackends that add in-process: ciphertexts (single-node deployments, tests) and, for the
explicit encryption-off benchmark mode, plaintext updates.

The ciphertext backend holds only ciphertexts, like the crypto service; production deployments
use the crypto service's SumService (`services.aggregator.crypto_backend`) so summation scales
separately.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from services.aggregator.contracts import CiphertextFacts
from services.aggregator.store import AggregatorStore
from ucadi.errors import UcadiError
from ucadi.lwe.integrity import update_slot_count
from ucadi.lwe.params import get_parameters
from ucadi.lwe.scheme import check_contribution
from ucadi.lwe.stream import open_verified, sum_files
from ucadi.wire.plain_update import PLAINTEXT_SET, read_plain, sum_plain


def read_facts(path: Path, digest_checked: bool = False) -> CiphertextFacts:
    """What the aggregator checks in a ciphertext's header (its trailing digest verified first,
    unless the receiver already checked it as the bytes arrived)."""
    header = open_verified(path, verify_digest=not digest_checked).header
    check_contribution(header)
    return CiphertextFacts(parameter_set=get_parameters(header.parameter_set).name,
                           key_id=header.key_id.hex(), layout_hash=header.layout_hash.hex(),
                           round=header.round_number, value_count=header.slot_count)


class LocalSumBackend:
    """Sums a round's stored, durable upload files when it is sealed (restart-safe)."""

    def __init__(self, store: AggregatorStore) -> None:
        self.store = store

    def open_round(self, round_number: int) -> None:
        """Nothing to prepare: the uploads are already durable in the store."""

    def add(self, round_number: int, site: str, path: Path, streamed: Any = None,
            sha256: str = "") -> None:
        """Nothing to do until sealing: the store keeps the file."""

    def stream(self, round_number: int, site: str, sha256: str = "") -> None:
        """Nothing is summed before the seal, so nothing is streamed."""

    def seal(self, round_number: int, out_path: Path, sites: Sequence[str] = ()) -> None:
        """Homomorphically add the round's accepted ciphertexts (its stored uploads, which
        are exactly `sites`') into out_path."""
        sum_files(self._stored(round_number), out_path)

    def _stored(self, round_number: int) -> list[Path]:
        return [upload.path for upload in self.store.uploads(round_number)
                if upload.path is not None]

    def takes_site_contributions(self) -> bool:
        """No: the uploads arrive here and are summed here."""
        return False

    def contribution_digest(self, round_number: int, site: str) -> str | None:
        """Sites never add at this backend themselves."""
        return None

    def close_round(self, round_number: int, sites: Sequence[str]) -> None:
        """The sum is made here, by `seal`."""
        return None

    def copy_sum(self, round_number: int, out_path: Path, size: int, sha256: str) -> None:
        """Never needed: every version is sealed into this store."""
        raise UcadiError("a single-node aggregator seals every version into its own store")

    def sum_chunks(self, round_number: int, offset: int) -> Iterator[Any]:
        """Never needed: every version is sealed into this store."""
        raise UcadiError("a single-node aggregator seals every version into its own store")


def read_plain_facts(path: Path, digest_checked: bool = False) -> CiphertextFacts:
    """The same facts for a plaintext update (encryption-off mode)."""
    header, _ = read_plain(path)
    return CiphertextFacts(parameter_set=PLAINTEXT_SET, key_id="",
                           layout_hash=header.layout_hash.hex(), round=header.round_number,
                           # compared with an encrypted update's slot count
                           value_count=update_slot_count(header.value_count))


class PlainSumBackend(LocalSumBackend):
    """Adds plaintext updates (encryption-off benchmark mode only)."""

    def seal(self, round_number: int, out_path: Path, sites: Sequence[str] = ()) -> None:
        """Add the round's plaintext updates into out_path."""
        sum_plain(self._stored(round_number), out_path)
