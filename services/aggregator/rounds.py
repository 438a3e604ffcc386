"""The aggregator's round state machine: announce -> collect -> seal -> publish.

```
                 quorum of live sites joined
   (no round) ------------------------------> COLLECTING(r)  <-----------------------------+
                                                  |  upload accepted -> stored, fed to sum   |
                                                  |  deadline passed with < min_sites:        |
                                                  |      deadline extended, keeps collecting  |
     all expected sites uploaded (>= min_sites)   |                                           |
     or deadline passed with >= min_sites         v                                           |
                       (pairwise masks only: UNMASKING(r): survivors send shares until all   |
                        did or the deadline with >= t; the masks left in the sum are stored) |
                                                  v                                           |
                                              SEALING(r)                                      |
                                                  |  every upload summed, sum sealed,         |
                                                  |  recorded as global version r             |
                        r == total_rounds         |  r < total_rounds                         |
                 COMPLETED <----------------------+------------> SEALED(r) --------------------+
                                                          round r+1 opened (at once; after
                                                          a crash, once min_sites live sites
                                                          poll again)
```

`RoundMachine` (here) runs the states drawn above, stepped by one background loop; it is one
of the four parts `RoundCoordinator` (coordinator.py) puts together, beside `RoundCore`
(core.py: settings, store, clock, the round lock), `Membership` (membership.py) and
`UploadIntake` (uploads.py). Settings, inputs and answers (the states, FederationConfig,
CiphertextFacts, SumBackend, RoundView and the errors) are defined in `contracts.py`. The
aggregator never sees a plaintext: uploads are ciphertext files handed to a `SumBackend` (the
crypto service's SumService) by a `SumFeeder` (`feeding.py`), or ciphertexts a site added at
the SumService itself and only recorded (`UploadIntake.record_contribution`); the seal names
the accepted sites, so a contribution the round refused is left out, and the sealed sum
becomes the next global version: stored here, or, where sites fetch sums from the sum
service, recorded by size and digest and kept there.

All state lives in `AggregatorStore`. The seal records version r with its round's new state
in one transaction and opens round r+1 in the next, so a crash between the two leaves round r
SEALED with nothing after it; every `step()` that finds the newest round SEALED opens the next
one (or completes the federation), so that one path finishes it whenever it is seen. On start,
`recover()` runs one step before the server answers: it re-feeds uploads the sum service has
not acknowledged (it answers duplicates idempotently), resumes a seal and opens the round
after one left sealed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from services.aggregator import metrics
from services.aggregator.contracts import (
    COLLECTING,
    COMPLETED,
    SEALED,
    SEALING,
    UNMASKING,
    SumBackend,
)
from services.aggregator.copies import VersionCopier
from services.aggregator.core import RoundCore
from services.aggregator.feeding import SumFeeder
from services.aggregator.masking import MaskExchange
from services.aggregator.membership import Membership
from services.aggregator.store import RoundRecord
from ucadi.errors import UcadiError
from ucadi.ops import faults
from ucadi.ops.tracing import tracer
from ucadi.wire import file_digest

log = logging.getLogger(__name__)

# Seconds between attempts of a round step that failed (the crypto service away, say).
STEP_RETRY_S = 2.0


def utc_time(unix_seconds: float) -> str:
    """A Unix time as people read it in logs: 2026-01-31 14:05:09 UTC."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class RoundMachine:
    """Opens, seals and completes rounds (the diagram above); one background loop steps it."""

    def __init__(self, core: RoundCore, membership: Membership, backend: SumBackend,
                 feeder: SumFeeder, copier: VersionCopier | None = None,
                 masks: MaskExchange | None = None) -> None:
        self.core = core
        self.config = core.config
        self.store = core.store
        self.membership = membership
        self.backend = backend
        self.feeder = feeder
        # Pairwise masks (masking.py): the key and share phases inside COLLECTING, UNMASKING.
        self.masks = masks or MaskExchange(core)
        # Versions sealed at the sum service stay there (DownloadGlobal streams them on);
        # optionally the aggregator keeps its own copy too (copies.py).
        self.copier = copier
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        # The kind of failure the step loop is retrying (None while steps work), and since when.
        self._failing: str | None = None
        self._failing_since = 0.0

    # -- background work ---------------------------------------------------------------
    def start(self) -> None:
        """Start the background loop (sum feeding, deadlines, sealing)."""
        self._worker = threading.Thread(target=self._run, name="rounds", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Stop the background loop."""
        self._stop.set()
        with self.core.changed:
            self.core.notify()
        if self._worker is not None:
            self._worker.join(timeout=10)
        self.feeder.close()
        if self.copier is not None:
            self.copier.close()

    def _run(self) -> None:
        core = self.core
        while not self._stop.is_set():
            with core.changed:
                core.changed_since_step = False
            if not self.attempt_step():
                self._stop.wait(STEP_RETRY_S)
            with core.changed:
                # A change made while step() ran must not wait for the next timeout.
                if not core.changed_since_step:
                    core.changed.wait(timeout=0.5)

    def attempt_step(self) -> bool:
        """One step; False if it failed. A failure is logged once when it starts (or changes
        kind) and once when it ends, not on every retry: an outage of the crypto service is
        one warning line, not a traceback every STEP_RETRY_S."""
        try:
            self.step()
        except Exception as exc:  # the loop must survive an outage; it retries
            kind = f"{type(exc).__name__} {getattr(exc, 'status', '')}"
            if kind != self._failing:
                if isinstance(exc, UcadiError):
                    log.warning("round step failed, retrying every %.0f s: %s", STEP_RETRY_S,
                                exc)
                else:  # not an outage: a fault worth its traceback, once
                    log.exception("round step failed, retrying every %.0f s", STEP_RETRY_S)
                if self._failing is None:
                    self._failing_since = time.monotonic()
                self._failing = kind
            return False
        if self._failing is not None:
            log.info("round step works again, after %.0f s of failures",
                     time.monotonic() - self._failing_since)
            self._failing = None
        return True

    # -- the state machine ---------------------------------------------------------------
    def recover(self) -> None:
        """Finish what a crash interrupted, before the server answers: one step (logged and
        left to the background loop if it fails)."""
        current = self.core.current()
        if current is not None and current.state in (SEALING, SEALED):
            log.warning("round %d was left %s when the aggregator stopped; finishing it",
                        current.round, current.state)
        sealed = {r.round for r in self.store.rounds() if r.state in (SEALED, COMPLETED)}
        for round_number in self.store.rounds_with_upload_files():
            if round_number in sealed:  # a crash came between the seal and the deletion
                self._discard_uploads(round_number)
        self.attempt_step()

    def step(self) -> None:
        """One pass: open a round, feed uploads to the sum, handle deadlines, seal, open the
        round after a sealed one."""
        with self.core.changed:
            current = self.core.current()
        if self.copier is not None:
            self.copier.ensure()
        if current is None or (current.state == COMPLETED):
            if current is None:
                self.maybe_open(1, base_version=0)
            return
        if current.state == SEALED:  # the next round did not open (a crash after the seal)
            self._after_sealed(current)
            return
        self.backend.open_round(current.round)
        self.feeder.feed_round(current.round)
        if current.state == COLLECTING and self.masks.enabled:
            with self.core.changed:
                if self.masks.advance(current):  # notifying always would spin this loop
                    self.core.notify()
        if current.state == COLLECTING and self._ready_to_seal(current):
            with self.core.changed:
                if self.masks.enabled:  # from here on no upload is accepted
                    current.state = UNMASKING
                    self.masks.begin_unmasking(
                        current, self.store.uploaded_sites(current.round))
                else:
                    current.state = SEALING
                self.store.update_round(current)
                self.core.publish_metrics()
                self.core.notify()
        if current.state == UNMASKING:
            with self.core.changed:
                if self.masks.try_unmask(current):
                    current.state = SEALING
                    self.store.update_round(current)
                    self.core.publish_metrics()
                    self.core.notify()
        if current.state == SEALING:
            # Uploads accepted while the feed above ran count for _ready_to_seal: they must
            # reach the sum before it is sealed.
            self.feeder.feed_round(current.round)
            self.seal(current)

    def _ready_to_seal(self, current: RoundRecord) -> bool:
        clock = self.core.clock
        uploaded = set(self.store.uploaded_sites(current.round))
        needed, short = self.config.min_sites, ""
        if self.masks.enabled:
            if self.store.mask_round(current.round).participants is None:
                if clock() >= current.deadline:  # fewer than t shared keys: wait on
                    current.deadline = clock() + self.config.round_timeout_s
                    self.store.update_round(current)
                return False
            needed = max(needed, self.masks.quorum(current.round))
            # A sparse graph: each neighbourhood must keep t survivors to be unmasked.
            short = self.masks.short_of_survivors(current.round, sorted(uploaded))
        quorum = len(uploaded) >= needed and not short
        if quorum and set(current.expected) <= uploaded:
            return True
        if clock() < current.deadline:
            return False
        if quorum:
            dropped = sorted(set(current.expected) - uploaded)
            log.warning("round %d: deadline passed; sealing with %d sites, dropping %s",
                        current.round, len(uploaded), ", ".join(dropped) or "none")
            current.expected = sorted(uploaded)
            return True
        current.deadline = clock() + self.config.round_timeout_s
        self.store.update_round(current)
        log.warning("round %d: deadline passed with %d of %d required uploads%s; extended by "
                    "%.0f s to %s", current.round, len(uploaded), needed,
                    f" (unmasking would lack the shares of {short})" if short else "",
                    self.config.round_timeout_s, utc_time(current.deadline))
        return False

    def seal(self, current: RoundRecord) -> None:
        """Seal round `current` (SEALING) into global version `current.round`, record it and
        open the next round or complete the federation."""
        started = time.perf_counter()
        sites = self.store.uploaded_sites(current.round)
        with tracer(__name__).start_as_current_span("seal") as span:
            span.set_attribute("ucadi.round", current.round)
            sealed = self._sum(current.round, sites)
        last = self._is_last(current.round)
        if not last:
            self._open_at_sum(current.round + 1)  # opened ahead unless that failed; no lock held
        with self.core.changed:
            current.sealed = self.core.clock()
            current.sum_seconds = time.perf_counter() - started
            current.global_bytes = sealed.size
            current.state = COMPLETED if last else SEALED
            self.store.commit_version(current.round, current.round, sealed.path, sealed.size,
                                      sealed.sha256, current)
            metrics.ROUND_DURATION.labels(self.config.federation_id).observe(
                current.sealed - current.opened)
            log.info("round %d sealed: global version %d (%d bytes) from %s", current.round,
                     current.round, current.global_bytes, ", ".join(current.expected))
            faults.crash_point("after_seal_before_open")
            if not last:
                self.maybe_open(current.round + 1, base_version=current.round, force=True)
            self.core.publish_metrics()
            self.core.notify()
        self._discard_uploads(current.round)
        if sealed.path is None and self.copier is not None:
            self.copier.start(current.round, sealed.size, sealed.sha256)

    def _sum(self, round_number: int, sites: list[str]) -> SealedVersion:
        """The round's sum, sealed at the sum service (where sites fetch sums from it: only its
        size and digest come here, the copier may copy the bytes later) or here."""
        closed = self.backend.close_round(round_number, sites)
        if closed is not None:
            return SealedVersion(None, *closed)
        out = self.store.global_path(round_number)
        tmp = out.with_suffix(".tmp")
        self.backend.seal(round_number, tmp, sites)
        tmp.replace(out)
        return SealedVersion(out, out.stat().st_size, file_digest(out))

    def _discard_uploads(self, round_number: int) -> None:
        """No individual upload outlives its round's seal (docs/security.md: retention)."""
        if removed := self.store.discard_uploads(round_number):
            log.info("round %d: deleted %d individual upload file(s) after the seal",
                     round_number, removed)

    def _is_last(self, round_number: int) -> bool:
        return bool(self.config.total_rounds) and round_number >= self.config.total_rounds

    def _after_sealed(self, sealed: RoundRecord) -> None:
        """What the seal of `sealed` does after recording it, for a round found SEALED with
        nothing after it: open the next round (once min_sites live sites poll, as the first
        round opens), or complete the federation if that was its last round."""
        if not self._is_last(sealed.round):
            self.maybe_open(sealed.round + 1, base_version=sealed.round)
            return
        with self.core.changed:
            sealed.state = COMPLETED
            self.store.update_round(sealed)
            self.core.publish_metrics()
            self.core.notify()
        log.info("round %d was the federation's last: completed", sealed.round)

    def _open_at_sum(self, round_number: int) -> None:
        """Open a round at the sum service before sites hear of it: they may send their
        ciphertexts there at once."""
        try:
            self.backend.open_round(round_number)
        except UcadiError as exc:  # step() opens it on every pass; a site's send falls back
            log.warning("round %d: the sum service did not open it yet (%s)", round_number, exc)

    def maybe_open(self, round_number: int, base_version: int, force: bool = False) -> None:
        """Open a round once enough live sites joined (`force`: at once, the seal of the one
        before having opened it at the sum service)."""
        if not force:
            if len(self.membership.live_sites()) < self.config.min_sites:
                return
            self._open_at_sum(round_number)
        with self.core.changed:
            live = self.membership.live_sites()
            if not force and len(live) < self.config.min_sites:
                return
            now = self.core.clock()
            record = RoundRecord(round=round_number, state=COLLECTING, base_version=base_version,
                                 opened=now, deadline=now + self.config.round_timeout_s,
                                 expected=sorted(live))
            self.store.open_round(record)
            self.core.publish_metrics()
            self.core.notify()
        log.info("round %d open until %s: expecting %s", round_number,
                 utc_time(record.deadline), ", ".join(record.expected))
        # One round ahead at the sum service: sealing this one then announces the next without
        # first waiting for that call (the seal opens it there only if this call failed).
        if not self.config.total_rounds or round_number < self.config.total_rounds:
            self._open_at_sum(round_number + 1)


@dataclass(frozen=True)
class SealedVersion:
    """A sealed round's global version: stored here (`path`), or only at the sum service
    (`path` None: DownloadGlobal streams it on from there), with its size and digest."""

    path: Path | None
    size: int
    sha256: str
