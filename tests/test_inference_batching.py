"""The dynamic batcher: merges concurrent requests, stays bounded, honours deadlines."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from services.inference.batching import (
    BatchingConfig,
    DeadlineExpiredError,
    DynamicBatcher,
    QueueFullError,
)
from ucadi.errors import UcadiError


class RecordingRunner:
    """Doubles every row, remembers batch sizes, can be held to fill the queue."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()

    def __call__(self, rows: np.ndarray) -> tuple[np.ndarray, str]:
        self.started.set()
        self.release.wait(10)
        self.batches.append(rows.shape[0])
        return rows * 2.0, f"batch-{len(self.batches)}"


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner()


def _rows(n: int, value: float, width: int = 3) -> np.ndarray:
    return np.full((n, width), value, dtype=np.float32)


def test_concurrent_requests_share_one_batch_and_get_their_own_rows(runner: RecordingRunner):
    batcher = DynamicBatcher(runner, BatchingConfig(max_batch=40, max_delay_s=0.5, max_queue=16))
    try:
        futures = [batcher.submit(_rows(5, float(i))) for i in range(8)]
        results = [f.result(timeout=10) for f in futures]
    finally:
        batcher.stop()
    assert runner.batches == [40]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result.outputs, _rows(5, 2.0 * i))
        assert result.tag == "batch-1" and result.batch_rows == 40


def test_batch_never_exceeds_max_batch_rows(runner: RecordingRunner):
    batcher = DynamicBatcher(runner, BatchingConfig(max_batch=10, max_delay_s=0.2, max_queue=16))
    try:
        futures = [batcher.submit(_rows(5, float(i))) for i in range(5)]
        for f in futures:
            f.result(timeout=10)
    finally:
        batcher.stop()
    assert max(runner.batches) <= 10 and sum(runner.batches) == 25


def test_request_larger_than_max_batch_runs_alone(runner: RecordingRunner):
    batcher = DynamicBatcher(runner, BatchingConfig(max_batch=4, max_delay_s=0.0, max_queue=4))
    try:
        result = batcher.run(_rows(9, 1.0))
    finally:
        batcher.stop()
    assert runner.batches == [9] and result.outputs.shape == (9, 3)


def test_requests_of_different_shapes_are_not_mixed(runner: RecordingRunner):
    batcher = DynamicBatcher(runner, BatchingConfig(max_batch=64, max_delay_s=0.3, max_queue=16))
    try:
        narrow = batcher.submit(_rows(2, 1.0, width=3))
        wide = batcher.submit(_rows(2, 1.0, width=5))
        assert narrow.result(timeout=10).outputs.shape == (2, 3)
        assert wide.result(timeout=10).outputs.shape == (2, 5)
    finally:
        batcher.stop()
    assert sorted(runner.batches) == [2, 2]


def test_full_queue_refuses_with_resource_exhausted(runner: RecordingRunner):
    runner.release.clear()
    batcher = DynamicBatcher(runner, BatchingConfig(max_batch=1, max_delay_s=0.0, max_queue=2))
    try:
        running = batcher.submit(_rows(1, 0.0))
        assert runner.started.wait(5)
        queued = [batcher.submit(_rows(1, 1.0)), batcher.submit(_rows(1, 2.0))]
        with pytest.raises(QueueFullError, match="queue is full") as refused:
            batcher.submit(_rows(1, 3.0))
        assert refused.value.status == "RESOURCE_EXHAUSTED"
        runner.release.set()
        for f in [running, *queued]:
            f.result(timeout=10)
    finally:
        runner.release.set()
        batcher.stop()


def test_request_whose_deadline_passed_in_the_queue_is_not_run(runner: RecordingRunner):
    runner.release.clear()
    batcher = DynamicBatcher(runner, BatchingConfig(max_batch=1, max_delay_s=0.0, max_queue=4))
    try:
        blocker = batcher.submit(_rows(1, 0.0))
        assert runner.started.wait(5)
        late = batcher.submit(_rows(1, 1.0), deadline=time.monotonic() + 0.05)
        time.sleep(0.1)
        runner.release.set()
        blocker.result(timeout=10)
        with pytest.raises(DeadlineExpiredError):
            late.result(timeout=10)
    finally:
        runner.release.set()
        batcher.stop()
    assert runner.batches == [1]


def test_a_failing_batch_fails_each_member_and_the_batcher_keeps_working():
    calls = {"n": 0}

    def flaky(rows: np.ndarray) -> tuple[np.ndarray, str]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise UcadiError("model exploded")
        return rows, "ok"

    batcher = DynamicBatcher(flaky, BatchingConfig(max_batch=8, max_delay_s=0.2, max_queue=8))
    try:
        first = [batcher.submit(_rows(1, 1.0)) for _ in range(2)]
        for f in first:
            with pytest.raises(UcadiError, match="exploded"):
                f.result(timeout=10)
        assert batcher.run(_rows(1, 4.0)).tag == "ok"
    finally:
        batcher.stop()


def test_invalid_limits_are_refused():
    with pytest.raises(UcadiError, match="positive"):
        BatchingConfig(max_batch=0)
