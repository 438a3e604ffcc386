"""glibc allocator settings for the processes that move multi-megabyte buffers every round.

By default glibc serves an allocation of 128 KiB or more with its own mmap (raising that
threshold only as such blocks are freed) and hands freed memory back to the kernel, so each
round's chunk, packing and ciphertext buffers fault in and zero their pages again. Measured on
the CI-sized machine: packing a 0.73 M-value contribution (4.7 MB) costs 4.9 ms with fresh pages
and 1.3 ms reusing freed ones. Here blocks under MMAP_THRESHOLD_BYTES come from the heap, free
memory at a heap's top is handed back only beyond TRIM_THRESHOLD_BYTES, and at most ARENA_MAX
arenas (heaps the threads share) hold such free memory; larger blocks (the 46 M model's whole
vectors) are still mapped and returned as before.

An operator's own MALLOC_* environment settings win: then nothing is changed here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

from prometheus_client import Gauge

log = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 16 << 20
TRIM_THRESHOLD_BYTES = 64 << 20
ARENA_MAX = 4
# mallopt parameter numbers (glibc malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_OPERATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX",
                      "MALLOC_TOP_PAD_")


def tune_allocator() -> bool:
    """Apply the settings above to this process; False where the C library is not glibc or
    the operator set MALLOC_* variables (nothing is changed then)."""
    if any(name in os.environ for name in _OPERATOR_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): its defaults stay
        return False
    applied = all(mallopt(parameter, value) == 1 for parameter, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        (_M_ARENA_MAX, ARENA_MAX)))
    if not applied:
        log.warning("the C library refused an allocator setting; its defaults may apply")
    return applied


MEMORY_LIMIT = Gauge("ucadi_process_memory_limit_bytes",
                     "Memory this process may use: its container's cgroup limit, or the "
                     "machine's memory when there is none (alerts divide the resident size "
                     "by it)")
CGROUP_LIMIT_FILES = (Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
                      Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))  # cgroup v1


def memory_limit_bytes(limit_files: tuple[Path, ...] = CGROUP_LIMIT_FILES) -> int:
    """The smaller of the machine's memory and the first cgroup memory limit found."""
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in limit_files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" (v2) means no limit; v1 writes a huge number instead
            limit = min(limit, int(text))
        break
    return limit
