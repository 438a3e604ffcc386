"""The allocator settings of `ucadi serve`: freed round buffers are reused, not faulted in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Allocates and frees two 4.7 MB buffers (a packed 0.73 M-value contribution and its bytes, as
# packing makes them) 20 times, after one warm-up, and reports the page faults that took: each
# buffer on fresh pages faults in all ~1,150 of them.
PROBE = """
import json, resource, sys
from ucadi.ops.memory import tune_allocator
applied = tune_allocator() if sys.argv[1] == "tuned" else None
def cycle():
    packed = bytearray(4_700_000)
    packed[::4096] = b"x" * len(packed[::4096])
    sent = bytes(packed)
    del packed, sent
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    cycle()
print(json.dumps({"applied": applied,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                          env={**clean, **env}, check=True, timeout=60)
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator settings")
def test_tuned_allocator_reuses_freed_round_buffers_instead_of_faulting_them_in():
    default, tuned = _probe("default"), _probe("tuned")
    assert tuned["applied"] is True
    assert default["faults"] > 20 * 1000  # every cycle maps and faults in fresh pages
    assert tuned["faults"] < 1000  # the freed heap memory is reused


def test_an_operators_malloc_settings_are_left_alone():
    assert _probe("tuned", MALLOC_ARENA_MAX="2")["applied"] is False
