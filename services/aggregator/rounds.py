"""The aggregator's round state machine: announce -> collect -> seal -> publish.

```
                 quorum of live sites joined
   (no round) ------------------------------> COLLECTING(r)  <-----------------------------+
                                                  |  upload accepted -> stored, fed to sum   |
                                                  |  deadline passed with < min_sites:        |
                                                  |      deadline extended, keeps collecting  |
     all expected sites uploaded (>= min_sites)   |                                           |
     or deadline passed with >= min_sites         v                                           |
                                              SEALING(r)                                      |
                                                  |  every upload summed, sum sealed,         |
                                                  |  recorded as global version r             |
                        r == total_rounds         |  r < total_rounds                         |
                 COMPLETED <----------------------+------------> SEALED(r) --------------------+
                                                          round r+1 opened (at once; after
                                                          a crash, once min_sites live sites
                                                          poll again)
```

Its settings, inputs and answers (the states, FederationConfig, CiphertextFacts, SumBackend,
RoundView and the errors) are defined in `contracts.py`; upload intake (validating, storing,
recording an upload) is the `UploadIntake` mix-in in `uploads.py`. The coordinator never sees a
plaintext: uploads are
ciphertext files handed to a `SumBackend` (the crypto service's SumService) by a `SumFeeder`
(`feeding.py`), or ciphertexts a site added at the SumService itself and only recorded here
(`record_contribution`); the seal names the accepted sites, so a contribution the round
refused is left out, and the sealed sum becomes the next global version: stored here, or,
where sites fetch sums from the sum service, recorded by size and digest and kept there.

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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.aggregator import metrics
from services.aggregator.contracts import (
    COLLECTING,
    COMPLETED,
    MAX_COUNT,
    SEALED,
    SEALING,
    CiphertextFacts,
    FederationConfig,
    FederationStateError,
    RoundView,
    SumBackend,
)
from services.aggregator.copies import VersionCopier
from services.aggregator.feeding import SumFeeder
from services.aggregator.store import AggregatorStore, RoundRecord
from services.aggregator.uploads import UploadIntake
from ucadi.errors import UcadiError
from ucadi.ops import faults
from ucadi.ops.tracing import tracer
from ucadi.wire import file_digest

log = logging.getLogger(__name__)

# How often a site's last-seen time is written to the store (it is live in memory at once).
SEEN_FLUSH_S = 5.0
# Seconds between attempts of a round step that failed (the crypto service away, say).
STEP_RETRY_S = 2.0


def utc_time(unix_seconds: float) -> str:
    """A Unix time as people read it in logs: 2026-01-31 14:05:09 UTC."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class RoundCoordinator(UploadIntake):
    """Owns rounds, membership and uploads of one federation; thread-safe."""

    def __init__(self, config: FederationConfig, store: AggregatorStore, backend: SumBackend,
                 read_facts: Callable[..., CiphertextFacts],
                 is_site_approved: Callable[[str], bool] = lambda site: True,
                 clock: Callable[[], float] = time.time,
                 copy_global_versions: bool = False) -> None:
        self.config = config
        self.store = store
        self.backend = backend
        self.read_facts = read_facts
        self.is_site_approved = is_site_approved
        self.clock = clock
        self._changed = threading.Condition(threading.RLock())
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._changed_since_step = False
        self.feeder = SumFeeder(store, backend)
        # Versions sealed at the sum service stay there (DownloadGlobal streams them on);
        # optionally the aggregator keeps its own copy too (copies.py).
        self.copier = VersionCopier(store, backend) if copy_global_versions else None
        self._last_seen: dict[str, float] = {}
        self._seen_flushed: dict[str, float] = {}
        # The kind of failure the step loop is retrying (None while steps work), and since when.
        self._failing: str | None = None
        self._failing_since = 0.0
        existing = store.federation()
        if existing is None:
            store.create_federation(config.federation_id, config.to_dict())
        elif existing[0] != config.federation_id:
            raise FederationStateError(
                f"state folder belongs to federation {existing[0]!r}, not "
                f"{config.federation_id!r}; use another --state-dir")
        for site in store.sites():
            self._last_seen[site.name] = site.last_seen
        self._publish_metrics()

    # -- background work ---------------------------------------------------------------
    def start(self) -> None:
        """Start the background loop (sum feeding, deadlines, sealing)."""
        self._worker = threading.Thread(target=self._run, name="rounds", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Stop the background loop."""
        self._stop.set()
        with self._changed:
            self._notify()
        if self._worker is not None:
            self._worker.join(timeout=10)
        self.feeder.close()
        if self.copier is not None:
            self.copier.close()

    def _notify(self) -> None:
        """Wake long-polls and the background loop (call holding `_changed`)."""
        self._changed_since_step = True
        self._changed.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._changed:
                self._changed_since_step = False
            if not self._attempt_step():
                self._stop.wait(STEP_RETRY_S)
            with self._changed:
                # A change made while step() ran must not wait for the next timeout.
                if not self._changed_since_step:
                    self._changed.wait(timeout=0.5)

    def _attempt_step(self) -> bool:
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

    # -- reading state -----------------------------------------------------------------
    def _current(self) -> RoundRecord | None:
        return self.store.latest_round()

    def view(self) -> RoundView:
        """The current round as a snapshot."""
        with self._changed:
            current = self._current()
            latest = self.store.latest_version()
            if current is None:
                return RoundView(0, "", 0, latest, 0.0, 0, self.config.local_epochs,
                                 min_sites=self.config.min_sites)
            uploaded = [u.site for u in self.store.uploads(current.round)]
            return RoundView(current.round, current.state, current.base_version, latest,
                             current.deadline, (current.round - 1) * self.config.local_epochs,
                             self.config.local_epochs, list(current.expected), uploaded,
                             self.config.min_sites)

    def wait_for_change(self, known_round: int, known_state: str, timeout: float) -> RoundView:
        """Block up to `timeout` s until the round or its state differs from what is known."""
        deadline = time.monotonic() + max(0.0, min(timeout, 60.0))
        with self._changed:
            while True:
                current = self.view()
                remaining = deadline - time.monotonic()
                if (current.round, current.state) != (known_round, known_state) or remaining <= 0:
                    return current
                self._changed.wait(timeout=remaining)

    # -- membership --------------------------------------------------------------------
    def join(self, site: str, train_cases: int) -> None:
        """Admit a site (after key approval); a site joining mid-round is expected in it."""
        if train_cases > MAX_COUNT:
            raise UcadiError(f"train_cases {train_cases} is not a number of cases (at most "
                             "2^63-1)")
        if train_cases > self.config.max_site_cases:
            raise UcadiError(f"site {site!r} trains on {train_cases} cases; this federation "
                             f"takes sites of up to {self.config.max_site_cases} (federation."
                             "max_site_cases): the operator raises it for a new federation")
        if not self.is_site_approved(site):
            raise FederationStateError(
                f"site {site!r} has no wrapped key for key id "
                f"{self.config.encryption.get('key_id')!r} yet; ask the key custodian to approve "
                "it (`ucadi keys wrap`) and join again")
        now = self.clock()
        with self._changed:
            self.store.upsert_site(site, "active", train_cases, now)
            self._last_seen[site] = now
            current = self._current()
            if current is not None and current.state == COLLECTING and site not in current.expected:
                current.expected.append(site)
                self.store.update_round(current)
            self._notify()
        log.info("site %s joined (%d training cases)", site, train_cases)

    def leave(self, site: str) -> None:
        """Mark a site as left; it is no longer waited for."""
        with self._changed:
            self._require_member(site)
            self.store.upsert_site(site, "left", 0, self.clock())
            current = self._current()
            uploaded = {u.site for u in self.store.uploads(current.round)} if current else set()
            if current is not None and current.state == COLLECTING and site in current.expected \
                    and site not in uploaded:
                current.expected.remove(site)
                self.store.update_round(current)
            self._notify()
        log.info("site %s left", site)

    def seen(self, site: str) -> None:
        """Liveness: the site called us. Kept in memory at once (deadlines, quorum) and written
        to the store at most every SEEN_FLUSH_S per site (status pages, restarts), so a poll
        costs no database commit."""
        now = self.clock()
        self._last_seen[site] = now
        if now - self._seen_flushed.get(site, float("-inf")) >= SEEN_FLUSH_S:
            self._seen_flushed[site] = now
            self.store.touch_site(site, now)

    def last_seen(self, site: str, stored: float) -> float:
        """When a site last called (the in-memory time; `stored` if none since start)."""
        return max(self._last_seen.get(site, stored), stored)

    def _require_member(self, site: str) -> None:
        if not any(s.name == site and s.state == "active" for s in self.store.sites()):
            raise FederationStateError(f"site {site!r} has not joined this federation (call Join)")

    def _live_sites(self) -> list[str]:
        now = self.clock()
        limit = self.config.liveness_timeout_s
        return [s.name for s in self.store.sites() if s.state == "active"
                and now - self._last_seen.get(s.name, s.last_seen) <= limit]

    def report_metrics(self, site: str, values: dict[str, Any]) -> None:
        """Store a site's shared validation metrics."""
        self._require_member(site)
        self.store.set_site_metrics(site, values)
        fed = self.config.federation_id
        for gauge, key in ((metrics.SITE_AUC, "auc"), (metrics.SITE_SENSITIVITY, "sensitivity"),
                           (metrics.SITE_SPECIFICITY, "specificity")):
            gauge.labels(fed, site).set(float(values.get(key, float("nan"))))

    # -- the state machine ---------------------------------------------------------------
    def recover(self) -> None:
        """Finish what a crash interrupted, before the server answers: one step (logged and
        left to the background loop if it fails)."""
        current = self._current()
        if current is not None and current.state in (SEALING, SEALED):
            log.warning("round %d was left %s when the aggregator stopped; finishing it",
                        current.round, current.state)
        sealed = {r.round for r in self.store.rounds() if r.state in (SEALED, COMPLETED)}
        for round_number in self.store.rounds_with_upload_files():
            if round_number in sealed:  # a crash came between the seal and the deletion
                self._discard_uploads(round_number)
        self._attempt_step()

    def step(self) -> None:
        """One pass: open a round, feed uploads to the sum, handle deadlines, seal, open the
        round after a sealed one."""
        with self._changed:
            current = self._current()
        if self.copier is not None:
            self.copier.ensure()
        if current is None or (current.state == COMPLETED):
            if current is None:
                self._maybe_open(1, base_version=0)
            return
        if current.state == SEALED:  # the next round did not open (a crash after the seal)
            self._after_sealed(current)
            return
        self.backend.open_round(current.round)
        self.feeder.feed_round(current.round)
        if current.state == COLLECTING and self._ready_to_seal(current):
            with self._changed:
                current.state = SEALING  # from here on no upload is accepted
                self.store.update_round(current)
                self._publish_metrics()
                self._notify()
        if current.state == SEALING:
            # Uploads accepted while the feed above ran count for _ready_to_seal: they must
            # reach the sum before it is sealed.
            self.feeder.feed_round(current.round)
            self._seal(current)

    def _ready_to_seal(self, current: RoundRecord) -> bool:
        uploaded = {u.site for u in self.store.uploads(current.round)}
        quorum = len(uploaded) >= self.config.min_sites
        if quorum and set(current.expected) <= uploaded:
            return True
        if self.clock() < current.deadline:
            return False
        if quorum:
            dropped = sorted(set(current.expected) - uploaded)
            log.warning("round %d: deadline passed; sealing with %d sites, dropping %s",
                        current.round, len(uploaded), ", ".join(dropped) or "none")
            current.expected = sorted(uploaded)
            return True
        current.deadline = self.clock() + self.config.round_timeout_s
        self.store.update_round(current)
        log.warning("round %d: deadline passed with %d of %d required uploads; extended by "
                    "%.0f s to %s", current.round, len(uploaded), self.config.min_sites,
                    self.config.round_timeout_s, utc_time(current.deadline))
        return False

    def _seal(self, current: RoundRecord) -> None:
        started = time.perf_counter()
        sites = [u.site for u in self.store.uploads(current.round)]
        with tracer(__name__).start_as_current_span("seal") as span:
            span.set_attribute("ucadi.round", current.round)
            # Where sites fetch the sum from the sum service, only its size and digest come
            # here: the sum service keeps the bytes (and the copier, if configured, copies them
            # here in the background).
            closed = self.backend.close_round(current.round, sites)
            if closed is None:
                out: Path | None = self.store.global_path(current.round)
                tmp = out.with_suffix(".tmp")
                self.backend.seal(current.round, tmp, sites)
                tmp.replace(out)
                closed = (out.stat().st_size, file_digest(out))
            else:
                out = None
        last = self._is_last(current.round)
        if not last:
            self._open_at_sum(current.round + 1)  # opened ahead unless that failed; no lock held
        with self._changed:
            current.sealed = self.clock()
            current.sum_seconds = time.perf_counter() - started
            current.global_bytes, digest = closed
            current.state = COMPLETED if last else SEALED
            self.store.commit_version(current.round, current.round, out, current.global_bytes,
                                      digest, current)
            metrics.ROUND_DURATION.labels(self.config.federation_id).observe(
                current.sealed - current.opened)
            log.info("round %d sealed: global version %d (%d bytes) from %s", current.round,
                     current.round, current.global_bytes, ", ".join(current.expected))
            faults.crash_point("after_seal_before_open")
            if not last:
                self._maybe_open(current.round + 1, base_version=current.round, force=True)
            self._publish_metrics()
            self._notify()
        self._discard_uploads(current.round)
        if out is None and self.copier is not None:
            self.copier.start(current.round, current.global_bytes, digest)

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
            self._maybe_open(sealed.round + 1, base_version=sealed.round)
            return
        with self._changed:
            sealed.state = COMPLETED
            self.store.update_round(sealed)
            self._publish_metrics()
            self._notify()
        log.info("round %d was the federation's last: completed", sealed.round)

    def _open_at_sum(self, round_number: int) -> None:
        """Open a round at the sum service before sites hear of it: they may send their
        ciphertexts there at once."""
        try:
            self.backend.open_round(round_number)
        except UcadiError as exc:  # step() opens it on every pass; a site's send falls back
            log.warning("round %d: the sum service did not open it yet (%s)", round_number, exc)

    def _maybe_open(self, round_number: int, base_version: int, force: bool = False) -> None:
        """Open a round once enough live sites joined (`force`: at once, the seal of the one
        before having opened it at the sum service)."""
        if not force:
            if len(self._live_sites()) < self.config.min_sites:
                return
            self._open_at_sum(round_number)
        with self._changed:
            live = self._live_sites()
            if not force and len(live) < self.config.min_sites:
                return
            now = self.clock()
            record = RoundRecord(round=round_number, state=COLLECTING, base_version=base_version,
                                 opened=now, deadline=now + self.config.round_timeout_s,
                                 expected=sorted(live))
            self.store.open_round(record)
            self._publish_metrics()
            self._notify()
        log.info("round %d open until %s: expecting %s", round_number,
                 utc_time(record.deadline), ", ".join(record.expected))
        # One round ahead at the sum service: sealing this one then announces the next without
        # first waiting for that call (the seal opens it there only if this call failed).
        if not self.config.total_rounds or round_number < self.config.total_rounds:
            self._open_at_sum(round_number + 1)

    def _publish_metrics(self) -> None:
        fed = self.config.federation_id
        current = self._current()
        if current is None:
            return
        metrics.ROUND_NUMBER.labels(fed).set(current.round)
        metrics.set_round_state(fed, current.state)
        metrics.ROUND_EXPECTED.labels(fed).set(len(current.expected))
        metrics.ROUND_PARTICIPANTS.labels(fed).set(len(self.store.uploads(current.round)))
        metrics.ROUND_DEADLINE.labels(fed).set(current.deadline)
        metrics.ROUND_SEALED.labels(fed).set(current.sealed)
