"""Copies of global versions the sum service sealed, made in the background (optional).

Where sites fetch each sealed sum from the sum service themselves (SumBackend.close_round), the
aggregator commits the version from its size and digest alone, so announcing it waits for no
bytes, and the sum service keeps the version. With `server.copy_global_versions`, this copier
also fetches each such sum into the aggregator's store (checked against that size and digest,
fsynced) at the lowest CPU priority, so the copy yields to the round's critical path on a
shared machine: a second copy, where the sum service's volume is not trusted to keep them.
Until a copy is recorded, DownloadGlobal streams the version on from the sum service. A failed
copy (sum service away) is retried on later round-loop passes, and after a restart the loop
copies whatever is still missing.
"""

from __future__ import annotations

import logging
import threading
import time

from services.aggregator.contracts import SumBackend
from services.aggregator.store import AggregatorStore
from ucadi.ops.priority import background_pool

log = logging.getLogger(__name__)

# Seconds before a failed copy is tried again.
RETRY_AFTER_S = 10.0


class VersionCopier:
    """Copies versions only the sum service holds into the store, one at a time."""

    def __init__(self, store: AggregatorStore, backend: SumBackend) -> None:
        self.store = store
        self.backend = backend
        self._pool = background_pool("version-copy")
        self._lock = threading.Lock()
        self._queued: set[int] = set()
        self._failed_at: dict[int, float] = {}

    def close(self) -> None:
        """Stop copying (queued copies are dropped; the next start copies them)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def ensure(self) -> None:
        """Queue every version not copied yet (a failed one after RETRY_AFTER_S)."""
        now = time.monotonic()
        for version, size, sha256 in self.store.versions_not_copied():
            if now - self._failed_at.get(version, float("-inf")) >= RETRY_AFTER_S:
                self.start(version, size, sha256)

    def start(self, version: int, size: int, sha256: str) -> None:
        """Queue the copy of one version (once)."""
        with self._lock:
            if version in self._queued:
                return
            self._queued.add(version)
        try:
            self._pool.submit(self._copy, version, size, sha256)
        except RuntimeError:  # shut down
            with self._lock:
                self._queued.discard(version)

    def _copy(self, version: int, size: int, sha256: str) -> None:
        out = self.store.global_path(version)
        partial = out.with_suffix(".fetch")
        try:
            # Global version v is the sum of round v.
            self.backend.copy_sum(version, partial, size, sha256)
            partial.replace(out)
            self.store.copy_version(version, out)
            self._failed_at.pop(version, None)
            log.info("global version %d copied from the sum service (%d bytes)", version, size)
        except Exception as exc:  # noqa: BLE001 - retried later; the version stays servable
            partial.unlink(missing_ok=True)
            self._failed_at[version] = time.monotonic()
            log.warning("copying global version %d from the sum service failed (%s); "
                        "retrying in %.0f s", version, exc, RETRY_AFTER_S)
        finally:
            with self._lock:
                self._queued.discard(version)
