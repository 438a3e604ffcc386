"""Named crash points for the crash-recovery tests, off unless `UCADI_CRASH_AT` is set.

`UCADI_CRASH_AT=<point>` makes a service process exit at once with code 137, as SIGKILL
leaves it (no cleanup, nothing flushed, no reply sent), when it reaches that point. Only tests
set it, on the one process they mean to crash, so a crash lands exactly in the window between
two durable steps:

- `after_seal_before_open` (aggregator): round r is recorded sealed, round r+1 not opened;
- `after_record_before_reply` (aggregator): a site's upload is recorded, its receipt not sent;
- `after_sum_took_before_record` (trainer): the sum service holds the site's ciphertext, the
  aggregator has not recorded it;
- `after_mask_keys_before_shares` (trainer, pairwise masks): the round's key set is saved at
  the site, its shares not yet sent.
"""

from __future__ import annotations

import os
import sys

CRASH_ENV = "UCADI_CRASH_AT"
# The exit status of a process killed by SIGKILL, as a shell reports it.
CRASH_EXIT_CODE = 137


def crash_point(name: str) -> None:
    """Exit the process here if UCADI_CRASH_AT names this point."""
    if os.environ.get(CRASH_ENV) == name:
        print(f"crash point {name} reached ({CRASH_ENV}): exiting with {CRASH_EXIT_CODE}",
              file=sys.stderr, flush=True)
        os._exit(CRASH_EXIT_CODE)
