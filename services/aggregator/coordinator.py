"""The aggregator's core as its servicers see it: `RoundCoordinator` builds the four parts of
one federation (as Flower separates its server, strategy and client manager) and is the only
thing the servicers call:

- `RoundCore` (core.py): settings, store, clock and the round lock every change is made under;
- `Membership` (membership.py): join, leave, liveness, shared validation metrics;
- `UploadIntake` (uploads.py): validating, storing and recording uploads;
- `RoundMachine` (rounds.py, with its state diagram): opening, sealing and completing rounds,
  run by one background loop;
- `MaskExchange` (masking.py): keys, shares and unmasking answers of pairwise-masked rounds.

Commands go to the part that owns them; queries (`view`, `global_chunks`, `sites`, `roster`,
`round_summaries`, ...) answer from the store, so no servicer touches the store or the sum
backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from services.aggregator.contracts import (
    CiphertextFacts,
    FederationConfig,
    FederationStateError,
    RoundView,
    SumBackend,
)
from services.aggregator.copies import VersionCopier
from services.aggregator.core import RoundCore
from services.aggregator.feeding import SumFeeder
from services.aggregator.masking import MaskExchange
from services.aggregator.membership import Membership
from services.aggregator.rounds import RoundMachine
from services.aggregator.store import AggregatorStore, RoundRecord, SiteRecord, UploadRecord
from services.aggregator.uploads import UploadIntake
from ucadi.errors import UcadiError
from ucadi.wire import iter_file_chunks
from ucadi.wire.roster import Roster


class RoundCoordinator:
    """Rounds, membership and uploads of one federation, as the servicers use them;
    thread-safe."""

    def __init__(self, config: FederationConfig, store: AggregatorStore, backend: SumBackend,
                 read_facts: Callable[..., CiphertextFacts],
                 is_site_approved: Callable[[str], bool] = lambda site: True,
                 clock: Callable[[], float] = time.time,
                 copy_global_versions: bool = False) -> None:
        existing = store.federation()
        if existing is None:
            store.create_federation(config.federation_id, config.to_dict())
        elif existing[0] != config.federation_id:
            raise FederationStateError(
                f"state folder belongs to federation {existing[0]!r}, not "
                f"{config.federation_id!r}; use another --state-dir")
        self.config = config
        self.store = store
        self.backend = backend
        self.core = RoundCore(config, store, clock)
        self.feeder = SumFeeder(store, backend)
        self.membership = Membership(self.core, is_site_approved)
        self.intake = UploadIntake(self.core, self.membership, backend, self.feeder, read_facts)
        self.masks = MaskExchange(self.core)
        self.machine = RoundMachine(self.core, self.membership, backend, self.feeder,
                                    VersionCopier(store, backend) if copy_global_versions
                                    else None, self.masks)
        self.core.publish_metrics()

    # -- the round machine ----------------------------------------------------------------
    def start(self) -> None:
        """Start the background loop (sum feeding, deadlines, sealing)."""
        self.machine.start()

    def stop(self) -> None:
        """Stop the background loop."""
        self.machine.stop()

    def recover(self) -> None:
        """Finish what a crash interrupted, before the server answers."""
        self.machine.recover()

    def step(self) -> None:
        """One pass of the round machine (the background loop calls it; so may tests)."""
        self.machine.step()

    # -- membership -------------------------------------------------------------------------
    def join(self, site: str, train_cases: int) -> None:
        """Admit a site (after key approval); a site joining mid-round is expected in it."""
        self.membership.join(site, train_cases)

    def leave(self, site: str) -> None:
        """Mark a site as left; it is no longer waited for."""
        self.membership.leave(site)

    def seen(self, site: str) -> None:
        """Liveness: the site called us."""
        self.membership.seen(site)

    def report_metrics(self, site: str, values: dict[str, Any]) -> None:
        """Store a site's shared validation metrics."""
        self.membership.report_metrics(site, values)

    # -- uploads ----------------------------------------------------------------------------
    def check_upload(self, site: str, header: Any) -> Path:
        """Validate an upload header against the open round; returns the partial file path."""
        return self.intake.check_upload(site, header)

    def stream_upload(self, round_number: int, site: str, sha256: str) -> Any:
        """Start passing an arriving upload on to the sum service (or None)."""
        return self.intake.stream_upload(round_number, site, sha256)

    def accept_upload(self, site: str, header: Any, assembled: Path,
                      digest_checked: bool = False, streamed: Any = None) -> UploadRecord:
        """Check the assembled ciphertext, store it durably and queue it to the sum."""
        return self.intake.accept_upload(site, header, assembled, digest_checked, streamed)

    def record_contribution(self, site: str, header: Any) -> UploadRecord:
        """Record an upload the site added at the sum service itself."""
        return self.intake.record_contribution(site, header)

    def reject(self, site: str, reason: str, error: Exception) -> None:
        """Count a refused upload and log it."""
        self.intake.reject(site, reason, error)

    # -- queries: all the servicers read --------------------------------------------------
    def view(self) -> RoundView:
        """The current round as a snapshot."""
        return self.core.view()

    def wait_for_change(self, known_round: int, known_state: str, timeout: float) -> RoundView:
        """Block up to `timeout` s until the round or its state differs from what is known."""
        return self.core.wait_for_change(known_round, known_state, timeout)

    def contributions_at_sum(self) -> bool:
        """Whether sites send their ciphertexts to the sum service themselves."""
        return self.backend.takes_site_contributions()

    def global_chunks(self, version: int, offset: int) -> Iterator[Any]:
        """Global version `version` from byte `offset`, as transfer chunks: the stored file, or
        (not copied from the sum service, or never) the same bytes streamed on from there."""
        found = self.store.version(version)
        if found is None:
            raise UcadiError(f"global version {version} does not exist; latest is "
                             f"{self.store.latest_version()} (version 0 is seeded locally)")
        path, size, sha256 = found
        if offset > size:
            raise UcadiError(f"offset {offset} is past the end ({size} bytes)")
        return (iter_file_chunks(path, offset=offset, sha256=sha256) if path
                else self.backend.sum_chunks(version, offset))

    def uploads(self, round_number: int) -> list[UploadRecord]:
        """The uploads a round accepted."""
        return self.store.uploads(round_number)

    def upload_count(self, round_number: int) -> int:
        """How many uploads a round accepted (a receipt's count: no per-site rows read)."""
        return self.store.upload_count(round_number)

    def upload_offset(self, round_number: int, site: str) -> int:
        """Bytes of `site`'s upload to the round received so far (where a resume starts)."""
        partial = self.store.partial_upload_path(round_number, site)
        return partial.stat().st_size if partial.exists() else 0

    def sites(self) -> list[tuple[SiteRecord, float]]:
        """Every site as stored, with when it last called."""
        return [(site, self.membership.last_seen(site.name, site.last_seen))
                for site in self.store.sites()]

    def roster(self) -> Roster:
        """Every site that ever joined, sorted: what compact site sets index."""
        return self.membership.roster()

    def round_summaries(self, only: int = 0) -> list[tuple[RoundRecord, list[str]]]:
        """Every round as stored (only round `only`, if not 0), with the sites whose uploads
        it accepted."""
        rounds = self.store.rounds() if not only else [
            r for r in [self.store.round(only)] if r is not None]
        return [(r, self.store.uploaded_sites(r.round)) for r in rounds]
