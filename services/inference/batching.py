"""Dynamic batching: concurrent requests share one forward pass.

Requests (each a few rows of model input, e.g. the 5 samplings of one study) wait in a bounded
queue. One worker thread takes the oldest request, then keeps collecting requests of the same
per-row shape until `max_batch` rows are gathered or the oldest request has waited
`max_delay_s`, runs them as one batch and splits the result back. A full queue refuses new work
at once (RESOURCE_EXHAUSTED) so overload costs neither a crash nor unbounded memory; a request
whose deadline passed while queued is answered DEADLINE_EXCEEDED without being run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from opentelemetry import trace

from services.inference.metrics import BATCH_SIZE, QUEUE_DEPTH
from ucadi.errors import UcadiError

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

Tag = TypeVar("Tag")
# Runs one batch [rows, ...] and returns (outputs [rows, ...], a tag naming what ran it,
# e.g. the model version), so every request learns which model answered it.
BatchRunner = Callable[[np.ndarray], tuple[np.ndarray, Tag]]


class QueueFullError(UcadiError):
    """The batcher's queue is full: the server is overloaded, retry later."""

    status = "RESOURCE_EXHAUSTED"


class DeadlineExpiredError(UcadiError):
    """The request's deadline passed before a batch slot was free."""

    status = "DEADLINE_EXCEEDED"


class BatcherStoppedError(UcadiError):
    """The service is shutting down and takes no more work."""

    status = "UNAVAILABLE"


@dataclass(frozen=True)
class BatchingConfig:
    """Limits of the dynamic batcher."""

    # Most model-input rows (samplings) in one forward pass; a larger request runs alone.
    # 16 = three 5-sampling studies: on a CPU the cost per row stops falling beyond a few
    # rows and rises again past ~16 as activations leave the cache (bench/inference_service).
    max_batch: int = 16
    # Longest time the oldest queued request waits for companions before its batch runs.
    max_delay_s: float = 0.005
    # Most requests waiting; one more gets RESOURCE_EXHAUSTED.
    max_queue: int = 64

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.max_delay_s < 0:
            raise UcadiError(f"batching limits must be positive (max batch {self.max_batch}, "
                             f"max queue {self.max_queue}, max delay {self.max_delay_s} s)")


@dataclass(frozen=True)
class BatchResult(Generic[Tag]):
    """One request's rows of the batch output and the tag of what computed them."""

    outputs: np.ndarray
    tag: Tag
    batch_rows: int


@dataclass(eq=False)
class _Pending:
    rows: np.ndarray
    deadline: float | None
    future: Future = field(default_factory=Future)


class DynamicBatcher(Generic[Tag]):
    """A bounded queue feeding one worker thread that runs batches through `runner`."""

    def __init__(self, runner: BatchRunner, config: BatchingConfig = BatchingConfig()) -> None:
        self.runner = runner
        self.config = config
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._stopped = False
        self._worker = threading.Thread(target=self._work, name="dynamic-batcher", daemon=True)
        self._worker.start()

    @property
    def depth(self) -> int:
        """Requests waiting now."""
        return len(self._queue)

    def submit(self, rows: np.ndarray, deadline: float | None = None) -> Future:
        """Queue rows [n, ...] (deadline: time.monotonic() value); a Future of BatchResult."""
        pending = _Pending(rows=rows, deadline=deadline)
        with self._cond:
            if self._stopped:
                raise BatcherStoppedError("the inference service is shutting down")
            if len(self._queue) >= self.config.max_queue:
                raise QueueFullError(
                    f"the inference queue is full ({self.config.max_queue} requests waiting); "
                    "the server is overloaded, retry with backoff")
            self._queue.append(pending)
            QUEUE_DEPTH.set(len(self._queue))
            self._cond.notify()
        return pending.future

    def run(self, rows: np.ndarray, deadline: float | None = None) -> BatchResult[Tag]:
        """Submit and wait for the result (raises what the batch raised)."""
        return self.submit(rows, deadline).result()

    def stop(self) -> None:
        """Finish the batch in progress, fail what still waits, stop the worker."""
        with self._cond:
            self._stopped = True
            waiting = list(self._queue)
            self._queue.clear()
            QUEUE_DEPTH.set(0)
            self._cond.notify_all()
        for pending in waiting:
            pending.future.set_exception(
                BatcherStoppedError("the inference service shut down before this request ran"))
        self._worker.join(timeout=30)

    def _work(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            self._run(batch)

    def _collect(self) -> list[_Pending] | None:
        """Wait for work, then gather one batch of same-shaped requests."""
        with self._cond:
            while not self._queue and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
            first = self._queue[0]
            shape = first.rows.shape[1:]
            flush_at = time.monotonic() + self.config.max_delay_s
            while not self._stopped:
                rows = sum(p.rows.shape[0] for p in self._queue if p.rows.shape[1:] == shape)
                remaining = flush_at - time.monotonic()
                if rows >= self.config.max_batch or remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch, kept, rows = [], deque(), 0
            for pending in self._queue:
                fits = rows + pending.rows.shape[0] <= self.config.max_batch or not batch
                if pending.rows.shape[1:] == shape and fits:
                    batch.append(pending)
                    rows += pending.rows.shape[0]
                else:
                    kept.append(pending)
            self._queue = kept
            QUEUE_DEPTH.set(len(self._queue))
            return batch

    def _run(self, batch: list[_Pending]) -> None:
        now = time.monotonic()
        live = []
        for pending in batch:
            if pending.deadline is not None and now > pending.deadline:
                pending.future.set_exception(DeadlineExpiredError(
                    "the request's deadline passed while it waited in the inference queue; "
                    "allow a longer deadline or retry when the server is less loaded"))
            elif pending.future.set_running_or_notify_cancel():
                live.append(pending)
        if not live:
            return
        counts = [p.rows.shape[0] for p in live]
        total = sum(counts)
        BATCH_SIZE.observe(total)
        try:
            with tracer.start_as_current_span("inference.batch") as span:
                span.set_attribute("ucadi.batch.rows", total)
                span.set_attribute("ucadi.batch.requests", len(live))
                stacked = live[0].rows if len(live) == 1 else np.concatenate(
                    [p.rows for p in live], axis=0)
                outputs, tag = self.runner(stacked)
        except Exception as exc:  # the batch's failure is every member's failure
            log.exception("batch of %d rows failed", total)
            for pending in live:
                pending.future.set_exception(exc)
            return
        start = 0
        for pending, count in zip(live, counts, strict=True):
            pending.future.set_result(BatchResult(outputs[start:start + count], tag, total))
            start += count
