"""The single-use guarantee of derived round seeds, kept durably at a site.

A site encrypts under its derived round seed (prepared.round_seed) at most once per key,
federation and round: two ciphertexts under one seed give the difference of their plaintexts
without the key. This ledger, written durably before the mask is made, is what enforces it
across restarts; the central side's record of bytes it already holds from the site
(`RoundContext.round_seed_unused`) covers a ledger restored from a backup or lost.
"""

from __future__ import annotations

import json
from pathlib import Path

from ucadi.durable import write_durably


class SeedLedger:
    """Per key and federation, the last round whose derived seed this site has used: a round
    seed may encrypt once (prepared.round_seed), and this file, written durably before the
    mask is made, is what guarantees it across restarts."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / "round-seeds-used.json"

    def claim(self, key_id: str, federation: str, round_number: int) -> bool:
        """Record the round's derived seed as used; False if it already was (or a later one)."""
        used = json.loads(self.path.read_text()) if self.path.exists() else {}
        entry = f"{key_id}/{federation}"
        if used.get(entry, 0) >= round_number:
            return False
        used[entry] = round_number
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(self.path, json.dumps(used).encode())
        return True
