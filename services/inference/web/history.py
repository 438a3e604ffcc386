"""The page's history: which studies were diagnosed, with what result, by which model version.

One SQLite table in the site's state folder. It keeps identifiers and results only (study and
series UID, class, probabilities, model version, user), never pixel data; entries older than
the retention period are deleted whenever an entry is added and when the page starts.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SECONDS_PER_DAY = 86400.0
SHOWN_ENTRIES = 50
SCHEMA = """
CREATE TABLE IF NOT EXISTS diagnoses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    diagnosed_at REAL NOT NULL,          -- Unix time, seconds
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    predicted_class TEXT NOT NULL,
    covid_probability REAL NOT NULL,
    probabilities TEXT NOT NULL,         -- JSON {class: probability}
    model_version TEXT NOT NULL,
    user TEXT NOT NULL
)
"""
COLUMNS = ("diagnosed_at", "study_uid", "series_uid", "predicted_class", "covid_probability",
           "probabilities", "model_version", "user")


class DiagnosisHistory:
    """The history table, with its retention applied."""

    def __init__(self, path: Path, retention_days: float) -> None:
        self.path = Path(path)
        self.retention_s = retention_days * SECONDS_PER_DAY
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(SCHEMA)
        self.expire()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            with db:  # commits, or rolls back on an error
                yield db
        finally:
            db.close()

    def add(self, entry: dict[str, Any]) -> None:
        """Record one diagnosis (keys: COLUMNS but diagnosed_at); nothing when retention is 0."""
        if self.retention_s <= 0:
            return
        row = {**entry, "diagnosed_at": time.time(),
               "probabilities": json.dumps(entry["probabilities"], sort_keys=True)}
        with self._lock, self._connect() as db:
            db.execute(f"INSERT INTO diagnoses ({', '.join(COLUMNS)}) VALUES "
                       f"({', '.join('?' for _ in COLUMNS)})", [row[c] for c in COLUMNS])
        self.expire()

    def expire(self) -> int:
        """Delete entries older than the retention period; returns how many went."""
        with self._lock, self._connect() as db:
            return db.execute("DELETE FROM diagnoses WHERE diagnosed_at < ?",
                              (time.time() - self.retention_s,)).rowcount

    def recent(self, limit: int = SHOWN_ENTRIES) -> list[dict[str, Any]]:
        """The newest entries first."""
        with self._lock, self._connect() as db:
            rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM diagnoses ORDER BY id DESC "
                              "LIMIT ?", (limit,)).fetchall()
        return [{**dict(zip(COLUMNS, row, strict=True)),
                 "probabilities": json.loads(row[COLUMNS.index("probabilities")])}
                for row in rows]
