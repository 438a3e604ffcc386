"""Who is in the federation: joining (after key approval), leaving, liveness and the
validation metrics sites share. Changes to membership reach the open round here: a site that
joins while it collects is expected in it, one that leaves before uploading is not waited for.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from services.aggregator import metrics
from services.aggregator.contracts import COLLECTING, MAX_COUNT, FederationStateError
from services.aggregator.core import RoundCore
from services.aggregator.store import SiteRecord
from ucadi.errors import UcadiError
from ucadi.wire.roster import Roster

log = logging.getLogger(__name__)

# How often a site's last-seen time is written to the store (it is live in memory at once).
SEEN_FLUSH_S = 5.0


class Membership:
    """Sites of one federation and when each last called; thread-safe."""

    def __init__(self, core: RoundCore,
                 is_site_approved: Callable[[str], bool] = lambda site: True) -> None:
        self.core = core
        self.is_site_approved = is_site_approved
        self._last_seen = {site.name: site.last_seen for site in core.store.sites()}
        self._seen_flushed: dict[str, float] = {}
        self._roster: Roster | None = None
        for site in core.store.sites():
            if site.state == "active":
                self._publish_last_round(site)

    def _publish_last_round(self, site: SiteRecord) -> None:
        """Set ucadi_site_last_round from the store: the last round the site uploaded to, or,
        if later, the round before the one open when it joined. So the gauge exists from the
        join on, and after a restart, and a site that never uploads is reported missing once
        three rounds pass without it (UcadiSiteMissingRounds) instead of never."""
        joined_at = self.core.store.round_open_at(site.joined)
        baseline = max(site.last_round, joined_at - 1 if joined_at else 0)
        metrics.SITE_LAST_ROUND.labels(self.core.config.federation_id, site.name).set(baseline)

    def join(self, site: str, train_cases: int) -> None:
        """Admit a site (after key approval); a site joining mid-round is expected in it."""
        config, store = self.core.config, self.core.store
        if train_cases > MAX_COUNT:
            raise UcadiError(f"train_cases {train_cases} is not a number of cases (at most "
                             "2^63-1)")
        if train_cases > config.max_site_cases:
            raise UcadiError(f"site {site!r} trains on {train_cases} cases; this federation "
                             f"takes sites of up to {config.max_site_cases} (federation."
                             "max_site_cases): the operator raises it for a new federation")
        if not self.is_site_approved(site):
            raise FederationStateError(
                f"site {site!r} has no wrapped key for key id "
                f"{config.encryption.get('key_id')!r} yet; ask the key custodian to approve "
                "it (`ucadi keys wrap`) and join again")
        now = self.core.clock()
        with self.core.changed:
            store.upsert_site(site, "active", train_cases, now)
            self._last_seen[site] = now
            if self._roster is not None and site not in self._roster.index:
                self._roster = None
            current = self.core.current()
            if current is not None and current.state == COLLECTING and site not in \
                    current.expected and not self._masking_under_way(current.round):
                current.expected.append(site)
                store.update_round(current)
            self.core.notify()
            self._publish_last_round(self._record(site))
        log.info("site %s joined (%d training cases)", site, train_cases)

    def _masking_under_way(self, round_number: int) -> bool:
        """Whether the round's pairwise-mask key set is fixed: a site joining then cannot take
        part, and must not be waited for (masking.py)."""
        return self.core.config.pairwise_masks and \
            self.core.store.mask_round(round_number).key_set is not None

    def leave(self, site: str) -> None:
        """Mark a site as left; it is no longer waited for."""
        store = self.core.store
        with self.core.changed:
            self.require_member(site)
            store.upsert_site(site, "left", 0, self.core.clock())
            current = self.core.current()
            uploaded = set(store.uploaded_sites(current.round)) if current else set()
            if current is not None and current.state == COLLECTING and site in current.expected \
                    and site not in uploaded:
                current.expected.remove(site)
                store.update_round(current)
            self.core.notify()
        # A site that left is not missing rounds: its series goes, so no alert stays pending.
        with contextlib.suppress(KeyError):
            metrics.SITE_LAST_ROUND.remove(self.core.config.federation_id, site)
        log.info("site %s left", site)

    def roster(self) -> Roster:
        """Every site that ever joined, sorted (kept until a new site joins): the names
        compact site sets index (ucadi/wire/roster.py). Take it after anything it must cover."""
        with self.core.changed:
            if self._roster is None:
                self._roster = Roster.of(self.core.store.site_names())
            return self._roster

    def seen(self, site: str) -> None:
        """Liveness: the site called us. Kept in memory at once (deadlines, quorum) and written
        to the store at most every SEEN_FLUSH_S per site (status pages, restarts), so a poll
        costs no database commit."""
        now = self.core.clock()
        self._last_seen[site] = now
        if now - self._seen_flushed.get(site, float("-inf")) >= SEEN_FLUSH_S:
            self._seen_flushed[site] = now
            self.core.store.touch_site(site, now)

    def last_seen(self, site: str, stored: float) -> float:
        """When a site last called (the in-memory time; `stored` if none since start)."""
        return max(self._last_seen.get(site, stored), stored)

    def _record(self, site: str) -> SiteRecord:
        record = self.core.store.site(site)
        assert record is not None, f"{site} was just stored"
        return record

    def require_member(self, site: str) -> None:
        """Raise FederationStateError unless `site` joined and has not left."""
        record = self.core.store.site(site)
        if record is None or record.state != "active":
            raise FederationStateError(f"site {site!r} has not joined this federation (call Join)")

    def live_sites(self) -> list[str]:
        """Active sites that called within the liveness timeout."""
        now = self.core.clock()
        limit = self.core.config.liveness_timeout_s
        return [s.name for s in self.core.store.sites() if s.state == "active"
                and now - self._last_seen.get(s.name, s.last_seen) <= limit]

    def report_metrics(self, site: str, values: dict[str, Any]) -> None:
        """Store a site's shared validation metrics."""
        self.require_member(site)
        self.core.store.set_site_metrics(site, values)
        fed = self.core.config.federation_id
        for gauge, key in ((metrics.SITE_AUC, "auc"), (metrics.SITE_SENSITIVITY, "sensitivity"),
                           (metrics.SITE_SPECIFICITY, "specificity")):
            gauge.labels(fed, site).set(float(values.get(key, float("nan"))))
