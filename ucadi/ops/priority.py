"""Background work that yields the CPU to a round's critical path on a shared machine."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor


def lowest_priority() -> None:
    """Run the calling thread at nice 19 (Linux threads have their own nice value)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux, or not permitted: normal priority
        pass


def background_pool(name: str) -> ThreadPoolExecutor:
    """One worker thread at the lowest CPU priority, for work nothing waits on."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=lowest_priority)
