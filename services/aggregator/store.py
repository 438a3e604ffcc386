"""Durable aggregator state: SQLite for records, one file per ciphertext, fsync before any ack.

Breakpoint resumption rests on two rules: a ciphertext file is fsynced and renamed into place
before its row is committed, and an RPC is acknowledged only after that commit. Killing the
process at any instant therefore leaves either no trace of an upload (the site retries) or a
complete, recorded one (the site's retry is answered as a duplicate and the upload is counted
once).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.aggregator.contracts import RoundState
from services.aggregator.mask_store import MaskStore
from ucadi.durable import fsync_dir
from ucadi.sqlite import immediate_transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS federation (
  id TEXT PRIMARY KEY, config_json TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sites (
  name TEXT PRIMARY KEY, state TEXT NOT NULL, joined REAL NOT NULL, last_seen REAL NOT NULL,
  train_cases INTEGER NOT NULL DEFAULT 0, last_round INTEGER NOT NULL DEFAULT 0,
  metrics_json TEXT);
CREATE TABLE IF NOT EXISTS rounds (
  round INTEGER PRIMARY KEY, state TEXT NOT NULL, base_version INTEGER NOT NULL,
  opened REAL NOT NULL, deadline REAL NOT NULL, sealed REAL NOT NULL DEFAULT 0,
  expected_json TEXT NOT NULL, bytes_in INTEGER NOT NULL DEFAULT 0,
  global_bytes INTEGER NOT NULL DEFAULT 0, sum_seconds REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS uploads (
  round INTEGER NOT NULL, site TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
  sha256 TEXT NOT NULL, num_samples INTEGER NOT NULL, local_epochs INTEGER NOT NULL,
  received REAL NOT NULL, summed INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (round, site));
CREATE INDEX IF NOT EXISTS uploads_digest ON uploads (sha256);
CREATE TABLE IF NOT EXISTS mask_rounds (
  round INTEGER PRIMARY KEY, key_set_json TEXT, threshold INTEGER NOT NULL DEFAULT 0,
  key_set_fixed REAL NOT NULL DEFAULT 0, participants_json TEXT, survivors_json TEXT,
  dropped_json TEXT, terms BLOB, neighbours INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS mask_keys (
  round INTEGER NOT NULL, site TEXT NOT NULL, share_public BLOB NOT NULL,
  mask_public BLOB NOT NULL, identity BLOB NOT NULL DEFAULT x'', PRIMARY KEY (round, site));
CREATE TABLE IF NOT EXISTS mask_shares (
  round INTEGER NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL, sealed BLOB NOT NULL,
  PRIMARY KEY (round, sender, recipient));
CREATE TABLE IF NOT EXISTS mask_answers (
  round INTEGER NOT NULL, site TEXT NOT NULL, answer_json TEXT NOT NULL,
  PRIMARY KEY (round, site));
CREATE TABLE IF NOT EXISTS versions (
  version INTEGER PRIMARY KEY, round INTEGER NOT NULL, path TEXT NOT NULL,
  size INTEGER NOT NULL, sha256 TEXT NOT NULL, created REAL NOT NULL);
"""


@dataclass
class RoundRecord:
    """One round as stored."""

    round: int
    state: RoundState
    base_version: int
    opened: float
    deadline: float
    expected: list[str]
    sealed: float = 0.0
    bytes_in: int = 0
    global_bytes: int = 0
    sum_seconds: float = 0.0


@dataclass
class UploadRecord:
    """One accepted site update."""

    round: int
    site: str
    # The stored ciphertext; None when the site added it at the sum service itself.
    path: Path | None
    size: int
    sha256: str
    num_samples: int
    local_epochs: int
    received: float
    summed: bool = False


@dataclass
class SiteRecord:
    """A site known to the federation."""

    name: str
    state: str
    joined: float
    last_seen: float
    train_cases: int = 0
    last_round: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


class AggregatorStore(MaskStore):
    """SQLite-backed records plus the ciphertext files under `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.upload_dir = self.state_dir / "uploads"
        self.global_dir = self.state_dir / "global"
        for folder in (self.state_dir, self.upload_dir, self.global_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.state_dir / "aggregator.sqlite3", check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(mask_keys)")}
        if "identity" not in columns:  # a state folder from before round-key identities
            self._db.execute("ALTER TABLE mask_keys ADD COLUMN identity BLOB NOT NULL "
                             "DEFAULT x''")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(mask_rounds)")}
        if "neighbours" not in columns:  # a state folder from before sparse neighbour graphs
            self._db.execute("ALTER TABLE mask_rounds ADD COLUMN neighbours INTEGER NOT NULL "
                             "DEFAULT 0")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _tx(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        with self._lock, immediate_transaction(self._db) as db:
            for sql, params in statements:
                db.execute(sql, params)

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # federation -------------------------------------------------------------------------
    def federation(self) -> tuple[str, dict[str, Any]] | None:
        """(id, config) of the stored federation, or None on a fresh state folder."""
        rows = self._rows("SELECT id, config_json FROM federation")
        return (rows[0][0], json.loads(rows[0][1])) if rows else None

    def create_federation(self, federation_id: str, config: dict[str, Any]) -> None:
        """Record the federation and its fixed configuration."""
        self._tx([("INSERT INTO federation VALUES (?, ?, ?)",
                   (federation_id, json.dumps(config, sort_keys=True), time.time()))])

    # sites ------------------------------------------------------------------------------
    def upsert_site(self, name: str, state: str, train_cases: int, now: float) -> None:
        """Add a site or mark it active/left again."""
        self._tx([("INSERT INTO sites (name, state, joined, last_seen, train_cases) "
                   "VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET state=excluded.state, "
                   "last_seen=excluded.last_seen, train_cases=CASE WHEN excluded.train_cases > 0 "
                   "THEN excluded.train_cases ELSE sites.train_cases END, "
                   # A site that left and joins again is new to the rounds from now on.
                   "joined=CASE WHEN sites.state='left' AND excluded.state='active' "
                   "THEN excluded.joined ELSE sites.joined END",
                   (name, state, now, now, train_cases))])

    def touch_site(self, name: str, now: float) -> None:
        """Record that a site was seen (liveness), without a durable commit cost per poll."""
        with self._lock:
            self._db.execute("UPDATE sites SET last_seen=? WHERE name=?", (now, name))

    def set_site_metrics(self, name: str, metrics: dict[str, Any]) -> None:
        """Store a site's latest shared validation metrics."""
        self._tx([("UPDATE sites SET metrics_json=? WHERE name=?", (json.dumps(metrics), name))])

    def sites(self) -> list[SiteRecord]:
        """All known sites."""
        return self._site_records("ORDER BY name")

    def site_names(self) -> list[str]:
        """Every site's name, active or left (the roster: no metrics parsed)."""
        return [r[0] for r in self._rows("SELECT name FROM sites ORDER BY name")]

    def site(self, name: str) -> SiteRecord | None:
        """One site, or None if it never joined (one row: a check per call must not read
        every site's, issue 25)."""
        found = self._site_records("WHERE name = ?", (name,))
        return found[0] if found else None

    def _site_records(self, where: str, params: tuple[Any, ...] = ()) -> list[SiteRecord]:
        return [SiteRecord(name=r[0], state=r[1], joined=r[2], last_seen=r[3], train_cases=r[4],
                           last_round=r[5], metrics=json.loads(r[6]) if r[6] else {})
                for r in self._rows("SELECT name, state, joined, last_seen, train_cases, "
                                    f"last_round, metrics_json FROM sites {where}", params)]

    # rounds -----------------------------------------------------------------------------
    def open_round(self, record: RoundRecord) -> None:
        """Record a newly opened round."""
        self._tx([("INSERT INTO rounds (round, state, base_version, opened, deadline, "
                   "expected_json) VALUES (?, ?, ?, ?, ?, ?)",
                   (record.round, record.state, record.base_version, record.opened,
                    record.deadline, json.dumps(record.expected)))])

    def update_round(self, record: RoundRecord) -> None:
        """Persist a round's state, deadline, expected sites and figures. Not bytes_in: each
        recorded upload adds to it in the database, and a record read before that upload
        would write the older total back."""
        self._tx([("UPDATE rounds SET state=?, deadline=?, sealed=?, expected_json=?, "
                   "global_bytes=?, sum_seconds=? WHERE round=?",
                   (record.state, record.deadline, record.sealed, json.dumps(record.expected),
                    record.global_bytes, record.sum_seconds, record.round))])

    def rounds(self) -> list[RoundRecord]:
        """All rounds, oldest first."""
        return self._round_records("ORDER BY round")

    def round_open_at(self, when: float) -> int:
        """The newest round opened at or before Unix time `when` (0 if none)."""
        rows = self._rows("SELECT MAX(round) FROM rounds WHERE opened <= ?", (when,))
        return int(rows[0][0] or 0)

    def latest_round(self) -> RoundRecord | None:
        """The newest round (one row read, however long the federation has run)."""
        found = self._round_records("ORDER BY round DESC LIMIT 1")
        return found[0] if found else None

    def round(self, round_number: int) -> RoundRecord | None:
        """One round, or None if it was never opened."""
        found = self._round_records(f"WHERE round = {int(round_number)}")
        return found[0] if found else None

    def latest_round_state(self) -> tuple[int, str]:
        """(round, state) of the newest round, (0, "") before the first: what a long poll
        compares on each wake-up, without decoding the round's site list."""
        rows = self._rows("SELECT round, state FROM rounds ORDER BY round DESC LIMIT 1")
        return (int(rows[0][0]), str(rows[0][1])) if rows else (0, "")

    def _round_records(self, order: str) -> list[RoundRecord]:
        return [RoundRecord(round=r[0], state=RoundState(r[1]), base_version=r[2], opened=r[3],
                            deadline=r[4], sealed=r[5], expected=json.loads(r[6]),
                            bytes_in=r[7], global_bytes=r[8], sum_seconds=r[9])
                for r in self._rows("SELECT round, state, base_version, opened, deadline, "
                                    "sealed, expected_json, bytes_in, global_bytes, sum_seconds "
                                    f"FROM rounds {order}")]

    # uploads ----------------------------------------------------------------------------
    def partial_upload_path(self, round_number: int, site: str) -> Path:
        """Where an in-progress upload accumulates (kept across a crash for resumption)."""
        return self.upload_dir / f"r{round_number:05d}" / f"{site}.part"

    def commit_upload(self, partial: Path | None, record: UploadRecord) -> None:
        """Move a verified, fsynced upload into place and record it atomically; `partial`
        None: the site added the ciphertext at the sum service (recorded as summed, no file)."""
        if partial is not None:
            final = self.upload_dir / f"r{record.round:05d}" / f"{record.site}.lwe"
            partial.replace(final)
            fsync_dir(final.parent)
            record.path = final
        else:
            record.path, record.summed = None, True
        self._tx([
            ("INSERT INTO uploads (round, site, path, size, sha256, num_samples, local_epochs, "
             "received, summed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
             (record.round, record.site, str(record.path or ""), record.size, record.sha256,
              record.num_samples, record.local_epochs, record.received, int(record.summed))),
            ("UPDATE sites SET last_round=MAX(last_round, ?) WHERE name=?",
             (record.round, record.site)),
            ("UPDATE rounds SET bytes_in=bytes_in+? WHERE round=?", (record.size, record.round)),
        ])

    def discard_uploads(self, round_number: int) -> int:
        """Delete a sealed round's individual uploads (its sum is durably stored: here, or by
        the sum service, which keeps its own copies of the contributions until it has stored
        the sum); their records (digest, size, counts) stay. Idempotent; files deleted."""
        folder = self.upload_dir / f"r{round_number:05d}"
        removed = 0
        if folder.is_dir():
            for path in folder.iterdir():
                path.unlink()
                removed += 1
            folder.rmdir()
            fsync_dir(self.upload_dir)
        self._tx([("UPDATE uploads SET path='' WHERE round=?", (round_number,))])
        return removed

    def rounds_with_upload_files(self) -> list[int]:
        """Rounds whose individual uploads are still on disk."""
        return [r[0] for r in self._rows(
            "SELECT DISTINCT round FROM uploads WHERE path != '' ORDER BY round")]

    def mark_summed(self, round_number: int, site: str) -> None:
        """Record that the crypto service has added this upload."""
        self._tx([("UPDATE uploads SET summed=1 WHERE round=? AND site=?", (round_number, site))])

    def upload_count(self, round_number: int) -> int:
        """Accepted uploads of a round, counted."""
        return int(self._rows("SELECT COUNT(*) FROM uploads WHERE round=?",
                              (round_number,))[0][0])

    def upload(self, round_number: int, site: str) -> UploadRecord | None:
        """`site`'s accepted upload to the round, or None (one row)."""
        found = self._upload_records("WHERE round=? AND site=?", (round_number, site))
        return found[0] if found else None

    def uploaded_sites(self, round_number: int) -> list[str]:
        """The sites whose uploads the round accepted, in the order received (names only:
        every poll's answer lists them)."""
        return [r[0] for r in self._rows("SELECT site FROM uploads WHERE round=? "
                                         "ORDER BY received", (round_number,))]

    def uploads(self, round_number: int) -> list[UploadRecord]:
        """Accepted uploads of a round."""
        return self._upload_records("WHERE round=? ORDER BY received", (round_number,))

    def _upload_records(self, where: str, params: tuple[Any, ...]) -> list[UploadRecord]:
        return [UploadRecord(round=r[0], site=r[1], path=Path(r[2]) if r[2] else None,
                             size=r[3], sha256=r[4],
                             num_samples=r[5], local_epochs=r[6], received=r[7], summed=bool(r[8]))
                for r in self._rows("SELECT round, site, path, size, sha256, num_samples, "
                                    f"local_epochs, received, summed FROM uploads {where}",
                                    params)]

    def digest_seen(self, sha256: str) -> bool:
        """Whether an upload with this digest was ever accepted (replay detection)."""
        return bool(self._rows("SELECT 1 FROM uploads WHERE sha256=?", (sha256,)))

    # global versions ----------------------------------------------------------------------
    def global_path(self, version: int) -> Path:
        """File of a sealed global version."""
        return self.global_dir / f"v{version:05d}.lwe"

    def commit_version(self, version: int, round_number: int, path: Path | None, size: int,
                       sha256: str, round_record: RoundRecord) -> None:
        """Record a sealed global version and its round's final state in one transaction;
        `path` None: the sum service holds it and the copy here comes later (copy_version)."""
        if path is not None:
            fsync_dir(path.parent)
        self._tx([
            ("INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?, ?, ?)",
             (version, round_number, str(path or ""), size, sha256, time.time())),
            ("UPDATE rounds SET state=?, sealed=?, global_bytes=?, sum_seconds=? WHERE round=?",
             (round_record.state, round_record.sealed, round_record.global_bytes,
              round_record.sum_seconds, round_record.round)),
        ])

    def version(self, version: int) -> tuple[Path | None, int, str] | None:
        """(path, size, sha256) of a global version, or None; path None while only the sum
        service holds it."""
        rows = self._rows("SELECT path, size, sha256 FROM versions WHERE version=?", (version,))
        if not rows:
            return None
        return (Path(rows[0][0]) if rows[0][0] else None), rows[0][1], rows[0][2]

    def copy_version(self, version: int, path: Path) -> None:
        """Record the (fsynced, verified) copy of a version the sum service held."""
        fsync_dir(path.parent)
        self._tx([("UPDATE versions SET path=? WHERE version=?", (str(path), version))])

    def versions_not_copied(self) -> list[tuple[int, int, str]]:
        """(version, size, sha256) of the versions only the sum service holds so far."""
        return [(r[0], r[1], r[2]) for r in self._rows(
            "SELECT version, size, sha256 FROM versions WHERE path='' ORDER BY version")]

    def latest_version(self) -> int:
        """Highest sealed global version; 0 (the seeded initial model) when none."""
        rows = self._rows("SELECT MAX(version) FROM versions")
        return int(rows[0][0] or 0)

