"""Feeding stored uploads to the sum service: each upload once, several side by side.

An upload is fed as soon as it is accepted (passing on the stream that carried it to the sum
service while it arrived, if any); the round loop feeds whatever is still unsummed (after a
restart, after a failed feed) and waits for every feed before it seals. A feed runs inside the
trace of the upload it sums.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from opentelemetry import context as otel_context

from services.aggregator.contracts import SumBackend
from services.aggregator.store import AggregatorStore, UploadRecord
from ucadi.ops.tracing import tracer

# Uploads streamed to the sum service at the same time.
FEEDERS = 4


class SumFeeder:
    """Feeds a federation's stored uploads to its SumBackend and tracks the feeds under way."""

    def __init__(self, store: AggregatorStore, backend: SumBackend) -> None:
        self.store = store
        self.backend = backend
        self._pool = ThreadPoolExecutor(max_workers=FEEDERS, thread_name_prefix="sum-feed")
        # (round, site) -> the feed under way.
        self._feeding: dict[tuple[int, str], Future[None]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stop feeding (feeds not started yet are dropped; the round loop feeds them later)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def feed_round(self, round_number: int) -> None:
        """Feed the round's uploads the sum service has not acknowledged yet and wait until
        each is summed, including feeds started on acceptance."""
        pending = [u for u in self.store.uploads(round_number) if not u.summed]
        for future in [self.start(upload) for upload in pending]:
            future.result()

    def start(self, upload: UploadRecord, streamed: Any = None,
              trace: otel_context.Context | None = None) -> Future[None]:
        """The feed of one upload: the one under way, or a new one; `streamed` is the
        upload's stream to the sum service (SumBackend.stream), `trace` the upload's trace."""
        key = (upload.round, upload.site)
        with self._lock:
            future = self._feeding.get(key)
            started = future is None
            if started:
                future = self._pool.submit(self._sum, upload, streamed, trace)
                self._feeding[key] = future
            elif streamed is not None:
                streamed.abort()  # the stored file is already being fed
        if started:
            # Outside the lock: a feed that already finished runs its callback right here.
            future.add_done_callback(lambda done: self._forget(key, done))
        return future

    def _forget(self, key: tuple[int, str], done: Future[None]) -> None:
        with self._lock:
            if self._feeding.get(key) is done:
                del self._feeding[key]

    def _sum(self, upload: UploadRecord, streamed: Any,
             trace: otel_context.Context | None) -> None:
        held = self.store.upload(upload.round, upload.site)
        if held is not None and held.summed:
            if streamed is not None:
                streamed.abort()
            return  # a feed that finished just before this one was started
        self.backend.open_round(upload.round)
        token = otel_context.attach(trace) if trace is not None else None
        try:
            with tracer(__name__).start_as_current_span("sum-contribution") as span:
                span.set_attribute("ucadi.site", upload.site)
                span.set_attribute("ucadi.round", upload.round)
                self.backend.add(upload.round, upload.site, upload.path, streamed,
                                 upload.sha256)
        finally:
            if token is not None:
                otel_context.detach(token)
        self.store.mark_summed(upload.round, upload.site)
