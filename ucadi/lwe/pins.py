"""The key custodian's pins: each approved site's public-key fingerprint, received out of band.

The key service lists whatever public keys it holds; whoever controls the central host could
replace one with a key of its own and be sent the LWE secret at the next routine `keys wrap`.
So the custodian wraps only for a key whose fingerprint it pinned after hearing it from the
site itself (`keys site-init` prints it; phone, signed letter), and refuses, naming the site and
both fingerprints, when the registered key differs.
"""

from __future__ import annotations

import json
from pathlib import Path

from ucadi.durable import write_durably
from ucadi.errors import UcadiError

PINS_FILE = "site-pins.json"
_HEX = set("0123456789abcdef")


class PinError(UcadiError):
    """A site is not pinned, or its registered key is not the pinned one."""


def checked_fingerprint(fingerprint: str) -> str:
    """A fingerprint in canonical form (lower-case hex), or PinError saying what is accepted."""
    value = fingerprint.strip().lower()
    if len(value) != 64 or not set(value) <= _HEX:
        raise PinError(f"a fingerprint is 64 hex characters (SHA-256, as `ucadi keys site-init` "
                       f"prints it), got {fingerprint!r}")
    return value


class SitePins:
    """site -> pinned fingerprint, kept durably in the custodian's folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.pins: dict[str, str] = (json.loads(self.path.read_text())
                                     if self.path.exists() else {})

    def pin(self, site: str, fingerprint: str) -> None:
        """Pin (or re-pin, after confirming a new key out of band) a site's fingerprint."""
        self.pins[site] = checked_fingerprint(fingerprint)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(self.path, json.dumps(self.pins, indent=2, sort_keys=True).encode())

    def check(self, site: str, registered_fingerprint: str) -> None:
        """Raise PinError unless the site's registered key is the pinned one."""
        pinned = self.pins.get(site)
        if pinned is None:
            raise PinError(f"site {site} is not pinned: confirm its key fingerprint with the "
                           f"site out of band, then `ucadi keys pin --site {site} "
                           f"--fingerprint <fp>` (registered key {registered_fingerprint})")
        if pinned != registered_fingerprint:
            raise PinError(f"site {site}: the key service holds fingerprint "
                           f"{registered_fingerprint}, but {pinned} is pinned; refusing to wrap "
                           "(a replaced key: re-pin only after the site confirms a new key)")
