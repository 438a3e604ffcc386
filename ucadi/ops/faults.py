"""Named crash points for the crash-recovery tests, off unless `UCADI_CRASH_AT` is set.

`UCADI_CRASH_AT=<point>` (or `<point>:<n>`) makes a service process exit at once with code
137, as SIGKILL leaves it (no cleanup, nothing flushed, no reply sent), the first (or n-th)
time it reaches that point. Only tests set it, on the one process they mean to crash, so a
crash lands exactly in the window between two durable steps:

- `after_seal_before_open` (aggregator): round r is recorded sealed, round r+1 not opened;
- `after_record_before_reply` (aggregator): a site's upload is recorded, its receipt not sent;
- `after_sum_took_before_record` (trainer): the sum service holds the site's ciphertext, the
  aggregator has not recorded it.
"""

from __future__ import annotations

import os
import sys
from collections import Counter

CRASH_ENV = "UCADI_CRASH_AT"
# The exit status of a process killed by SIGKILL, as a shell reports it.
CRASH_EXIT_CODE = 137
_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """Exit the process here if UCADI_CRASH_AT names this point (on its n-th visit)."""
    wanted = os.environ.get(CRASH_ENV, "")
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        print(f"crash point {name} reached ({CRASH_ENV}): exiting with {CRASH_EXIT_CODE}",
              file=sys.stderr, flush=True)
        os._exit(CRASH_EXIT_CODE)
