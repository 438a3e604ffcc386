"""What membership, upload intake and the round machine share: the federation's settings, the
store, the clock, and one condition variable under which the current round changes. Waiting on
it is how long-polls (`wait_for_change`) and the round machine's loop hear of a change, so every
change is made holding `changed` and ends with `notify()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from services.aggregator import metrics
from services.aggregator.contracts import UNMASKING, FederationConfig, RoundView
from services.aggregator.store import AggregatorStore, RoundRecord


class RoundCore:
    """The federation's settings, store, clock and round lock, shared by its parts."""

    def __init__(self, config: FederationConfig, store: AggregatorStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.changed = threading.Condition(threading.RLock())
        # Set by notify(); the round machine's loop clears it before a step, so a change made
        # while the step ran does not wait for the next poll interval.
        self.changed_since_step = False
        # Counts notify() calls: the current round's view is built once per change and shared
        # by every answer until the next (1,000 sites polling made it O(sites^2) per round).
        self._generation = 0
        self._view: tuple[tuple[int, tuple[int, str]], RoundView] | None = None

    def notify(self) -> None:
        """Wake long-polls and the round machine (call holding `changed`)."""
        self.changed_since_step = True
        self._generation += 1
        self.changed.notify_all()

    def current(self) -> RoundRecord | None:
        """The newest round, as stored."""
        return self.store.latest_round()

    def view(self) -> RoundView:
        """The current round as a snapshot, shared by the answers made until the next change:
        read it, never modify it."""
        with self.changed:
            # The round and state are read each time (one small row), in case a change was
            # stored without notify().
            key = (self._generation, self.store.latest_round_state())
            if self._view is None or self._view[0] != key:
                self._view = (key, self._build_view())
            return self._view[1]

    def _build_view(self) -> RoundView:
        with self.changed:
            current = self.current()
            latest = self.store.latest_version()
            if current is None:
                return RoundView(0, "", 0, latest, 0.0, 0, self.config.local_epochs,
                                 min_sites=self.config.min_sites)
            uploaded = self.store.uploaded_sites(current.round)
            view = RoundView(current.round, current.state, current.base_version, latest,
                             current.deadline, (current.round - 1) * self.config.local_epochs,
                             self.config.local_epochs, list(current.expected), uploaded,
                             self.config.min_sites)
            if current.state == UNMASKING:
                masked = self.store.mask_round(current.round)
                view.survivors, view.dropped = masked.survivors or [], masked.dropped or []
            return view

    def wait_for_change(self, known_round: int, known_state: str, timeout: float) -> RoundView:
        """Block up to `timeout` s until the round or its state differs from what is known."""
        deadline = time.monotonic() + max(0.0, min(timeout, 60.0))
        with self.changed:
            while True:
                # Every upload wakes every waiting poll: each compares the round and state only,
                # and builds the view (the round's site lists) once, to answer (issue 25).
                remaining = deadline - time.monotonic()
                if self.store.latest_round_state() != (known_round, known_state) \
                        or remaining <= 0:
                    return self.view()
                self.changed.wait(timeout=remaining)

    def publish_metrics(self) -> None:
        """The current round's gauges."""
        fed = self.config.federation_id
        current = self.current()
        if current is None:
            return
        metrics.ROUND_NUMBER.labels(fed).set(current.round)
        metrics.set_round_state(fed, current.state)
        metrics.ROUND_EXPECTED.labels(fed).set(len(current.expected))
        metrics.ROUND_PARTICIPANTS.labels(fed).set(self.store.upload_count(current.round))
        metrics.ROUND_DEADLINE.labels(fed).set(current.deadline)
        metrics.ROUND_SEALED.labels(fed).set(current.sealed)
