"""The aggregator's records of pairwise-masked rounds (docs/design/multiparty.md): each round's
fixed sets, the sites' advertised round keys, the sealed share pairs it relays and the
survivors' unmasking answers. A part of `AggregatorStore` (store.py), in the same SQLite
database and transactions; split out because it is its own protocol."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class MaskRoundRecord:
    """A masked round's fixed sets (docs/design/multiparty.md); None until fixed."""

    round: int
    key_set: list[str] | None = None
    threshold: int = 0
    key_set_fixed: float = 0.0
    participants: list[str] | None = None
    survivors: list[str] | None = None
    dropped: list[str] | None = None
    terms: bytes | None = None  # (32-byte seed + 1 sign byte) per mask left in the sum
    neighbours: int = 0  # k of the round's neighbour graph (0 = complete), fixed with t


class MaskStore:
    """Masked rounds' records; mixed into AggregatorStore, whose database, lock and
    transaction helpers it uses."""

    _db: sqlite3.Connection
    _lock: threading.RLock
    _tx: Callable[[list[tuple[str, tuple[Any, ...]]]], None]
    _rows: Callable[..., list[tuple[Any, ...]]]

    def mask_round(self, round_number: int) -> MaskRoundRecord:
        """A masked round's sets as stored (all None before the first is fixed)."""
        rows = self._rows("SELECT key_set_json, threshold, key_set_fixed, participants_json, "
                          "survivors_json, dropped_json, terms, neighbours FROM mask_rounds "
                          "WHERE round=?",
                          (round_number,))
        if not rows:
            return MaskRoundRecord(round_number)
        r = rows[0]
        return MaskRoundRecord(round_number, _load(r[0]), r[1], r[2], _load(r[3]), _load(r[4]),
                               _load(r[5]), r[6], r[7])

    def save_mask_round(self, record: MaskRoundRecord) -> None:
        """Persist a masked round's sets (each written once, when fixed)."""
        self._tx([("INSERT OR REPLACE INTO mask_rounds (round, key_set_json, threshold, "
                   "key_set_fixed, participants_json, survivors_json, dropped_json, terms, "
                   "neighbours) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (record.round, _dump(record.key_set), record.threshold, record.key_set_fixed,
                    _dump(record.participants), _dump(record.survivors), _dump(record.dropped),
                    record.terms, record.neighbours))])

    def put_mask_keys(self, round_number: int, site: str, share_public: bytes,
                      mask_public: bytes, identity: bytes) -> tuple[bytes, bytes, bytes]:
        """Store a site's round keys and identity unless it already advertised; what is
        stored."""
        with self._lock:
            self._tx([("INSERT OR IGNORE INTO mask_keys (round, site, share_public, mask_public,"
                       " identity) VALUES (?, ?, ?, ?, ?)",
                       (round_number, site, share_public, mask_public, identity))])
            row = self._rows("SELECT share_public, mask_public, identity FROM mask_keys WHERE "
                             "round=? AND site=?", (round_number, site))[0]
        return bytes(row[0]), bytes(row[1]), bytes(row[2])

    def mask_keys(self, round_number: int) -> dict[str, tuple[bytes, bytes, bytes]]:
        """Every site's advertised round keys and identity."""
        return {r[0]: (bytes(r[1]), bytes(r[2]), bytes(r[3])) for r in self._rows(
            "SELECT site, share_public, mask_public, identity FROM mask_keys WHERE round=? "
            "ORDER BY site", (round_number,))}

    def put_mask_shares(self, round_number: int, sender: str, sealed: dict[str, bytes]) -> bool:
        """Store a sender's sealed share pairs in one transaction unless it gave them already;
        whether these were stored."""
        with self._lock:
            if self._rows("SELECT 1 FROM mask_shares WHERE round=? AND sender=? LIMIT 1",
                          (round_number, sender)):
                return False
            self._tx([("INSERT INTO mask_shares VALUES (?, ?, ?, ?)",
                       (round_number, sender, recipient, blob))
                      for recipient, blob in sorted(sealed.items())])
        return True

    def mask_share_senders(self, round_number: int) -> list[str]:
        """Sites whose sealed shares are stored for the round."""
        return [r[0] for r in self._rows("SELECT DISTINCT sender FROM mask_shares WHERE round=? "
                                         "ORDER BY sender", (round_number,))]

    def mask_shares_for(self, round_number: int, recipient: str) -> dict[str, bytes]:
        """The sealed share pairs addressed to `recipient`, by sender."""
        return {r[0]: bytes(r[1]) for r in self._rows(
            "SELECT sender, sealed FROM mask_shares WHERE round=? AND recipient=?",
            (round_number, recipient))}

    def put_mask_answer(self, round_number: int, site: str, answer: dict[str, Any]) -> None:
        """Store a survivor's unmasking answer (the first one counts)."""
        self._tx([("INSERT OR IGNORE INTO mask_answers VALUES (?, ?, ?)",
                   (round_number, site, json.dumps(answer, sort_keys=True)))])

    def mask_answers(self, round_number: int) -> dict[str, dict[str, Any]]:
        """The survivors' unmasking answers, by site."""
        return {r[0]: json.loads(r[1]) for r in self._rows(
            "SELECT site, answer_json FROM mask_answers WHERE round=?", (round_number,))}


def _load(text: str | None) -> Any:
    return json.loads(text) if text is not None else None


def _dump(value: Any) -> str | None:
    return json.dumps(value) if value is not None else None
