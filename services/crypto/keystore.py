"""The key service's store (SQLite): site public keys, wrapped secrets, the active key id.

It holds only public data and blobs wrapped for one site each (AES-GCM under a key only that
site's X25519 private key can derive): nothing here can decrypt a ciphertext.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ucadi.errors import UcadiError
from ucadi.lwe.keywrap import WRAP_VERSION, fingerprint, load_public_key
from ucadi.lwe.params import get_parameters
from ucadi.sqlite import immediate_transaction

MAX_WRAPPED_BLOB_BYTES = 4096
KEY_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS site_keys (
    site TEXT PRIMARY KEY, public_key_pem BLOB NOT NULL, fingerprint TEXT NOT NULL,
    registered_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS key_sets (
    key_id TEXT PRIMARY KEY, parameter_set TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS wrapped_keys (
    key_id TEXT NOT NULL REFERENCES key_sets(key_id), site TEXT NOT NULL, blob BLOB NOT NULL,
    stored_at REAL NOT NULL, PRIMARY KEY (key_id, site));
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS approved_key_changes (
    site TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, approved_at REAL NOT NULL);
"""


class KeyStoreError(UcadiError):
    """A key-service request that cannot be honoured as given."""


class KeyChangeRefusedError(KeyStoreError):
    """A site registers a key other than the one it registered, without the custodian's
    approval."""

    status = "FAILED_PRECONDITION"


class KeyNotFoundError(KeyStoreError):
    """No such site key, key id or wrapped blob."""

    status = "NOT_FOUND"


@dataclass(frozen=True)
class SiteKeyRecord:
    """A registered site public key."""

    site: str
    public_key_pem: bytes
    fingerprint: str
    registered_at: float


@dataclass(frozen=True)
class WrappedKeyRecord:
    """A secret wrapped for one site."""

    key_id: str
    parameter_set: str
    site: str
    blob: bytes


class KeyStore:
    """Durable key-service state in one SQLite file (WAL, synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def register_site(self, site: str, public_key_pem: bytes) -> SiteKeyRecord:
        """Store a site's X25519 public key (validated). The same key again is a no-op; a
        different one replaces it only if the custodian approved exactly that fingerprint
        (`approve_key_change`), which the replacement uses up."""
        load_public_key(public_key_pem)
        record = SiteKeyRecord(site, public_key_pem, fingerprint(public_key_pem), time.time())
        with self._lock:
            held = self._db.execute("SELECT fingerprint FROM site_keys WHERE site = ?",
                                    (site,)).fetchone()
            if held is not None and held[0] != record.fingerprint:
                approved = self._db.execute(
                    "SELECT fingerprint FROM approved_key_changes WHERE site = ?",
                    (site,)).fetchone()
                if approved is None or approved[0] != record.fingerprint:
                    raise KeyChangeRefusedError(
                        f"site {site} already registered key {held[0]}; a different key "
                        f"({record.fingerprint}) is accepted only once the key custodian "
                        f"approves it: `ucadi keys approve-key --site {site} --fingerprint "
                        f"{record.fingerprint}`")
            if held is not None and held[0] == record.fingerprint:
                return record
            with immediate_transaction(self._db) as db:
                db.execute("INSERT OR REPLACE INTO site_keys VALUES (?, ?, ?, ?)",
                           (site, public_key_pem, record.fingerprint, record.registered_at))
                db.execute("DELETE FROM approved_key_changes WHERE site = ?", (site,))
        return record

    def approve_key_change(self, site: str, new_fingerprint: str) -> None:
        """The custodian allows `site` to register the key with this fingerprint once."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO approved_key_changes VALUES (?, ?, ?)",
                             (site, new_fingerprint.lower(), time.time()))

    def site_keys(self) -> list[SiteKeyRecord]:
        """All registered site keys, sorted by site."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM site_keys ORDER BY site").fetchall()
        return [SiteKeyRecord(r[0], bytes(r[1]), r[2], r[3]) for r in rows]

    def site_names(self) -> list[str]:
        """Names of the registered sites, sorted (their keys left unread)."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT site FROM site_keys ORDER BY site")]

    def put_wrapped(self, key_id: str, parameter_set: str, blobs: dict[str, bytes],
                    activate: bool) -> int:
        """Store wrapped blobs for registered sites under key_id; optionally activate it."""
        if not KEY_ID_PATTERN.match(key_id):
            raise KeyStoreError(f"key id {key_id!r} must be 32 lower-case hex characters")
        get_parameters(parameter_set)
        if not blobs:
            raise KeyStoreError("no wrapped blobs given; wrap the key for at least one site")
        registered = {r.site for r in self.site_keys()}
        for site, blob in blobs.items():
            if site not in registered:
                raise KeyNotFoundError(f"site {site!r} has not registered a public key")
            if not 0 < len(blob) <= MAX_WRAPPED_BLOB_BYTES or blob[0] != WRAP_VERSION:
                raise KeyStoreError(f"blob for {site!r} is not a version-{WRAP_VERSION} wrapped "
                                    f"key of at most {MAX_WRAPPED_BLOB_BYTES} bytes")
        now = time.time()
        with self._lock:
            existing = self._db.execute("SELECT parameter_set FROM key_sets WHERE key_id = ?",
                                        (key_id,)).fetchone()
            if existing and existing[0] != parameter_set:
                raise KeyStoreError(f"key id {key_id} is already stored with parameter set "
                                    f"{existing[0]}; a new secret needs a new key id")
            with immediate_transaction(self._db) as db:
                db.execute("INSERT OR IGNORE INTO key_sets VALUES (?, ?, ?)",
                           (key_id, parameter_set, now))
                db.executemany("INSERT OR REPLACE INTO wrapped_keys VALUES (?, ?, ?, ?)",
                               [(key_id, s, b, now) for s, b in blobs.items()])
                if activate:
                    db.execute("INSERT OR REPLACE INTO settings VALUES ('active_key', ?)",
                               (key_id,))
        return len(blobs)

    def active_key(self) -> tuple[str, str] | None:
        """(key id, parameter set) of the active key, or None before the first upload."""
        with self._lock:
            row = self._db.execute(
                "SELECT k.key_id, k.parameter_set FROM settings s JOIN key_sets k "
                "ON k.key_id = s.value WHERE s.name = 'active_key'").fetchone()
        return (row[0], row[1]) if row else None

    def wrapped_for(self, site: str, key_id: str = "") -> WrappedKeyRecord:
        """The blob wrapped for `site` under key_id (the active key when empty)."""
        if not key_id:
            active = self.active_key()
            if active is None:
                raise KeyNotFoundError("no active key yet: the custodian must run `ucadi keys "
                                       "wrap` after the sites registered")
            key_id = active[0]
        with self._lock:
            row = self._db.execute(
                "SELECT w.blob, k.parameter_set FROM wrapped_keys w JOIN key_sets k "
                "ON k.key_id = w.key_id WHERE w.key_id = ? AND w.site = ?",
                (key_id, site)).fetchone()
        if row is None:
            raise KeyNotFoundError(f"no key {key_id} wrapped for site {site!r}; ask the "
                                   "custodian to approve the site (`ucadi keys wrap`)")
        return WrappedKeyRecord(key_id, row[1], site, bytes(row[0]))

    def is_approved(self, site: str, key_id: str = "") -> tuple[str, bool]:
        """(key id checked, whether a blob for `site` is stored under it); active key if empty."""
        if not key_id:
            active = self.active_key()
            if active is None:
                return "", False
            key_id = active[0]
        with self._lock:
            row = self._db.execute("SELECT 1 FROM wrapped_keys WHERE key_id = ? AND site = ?",
                                   (key_id, site)).fetchone()
        return key_id, row is not None

    def wrapped_count(self) -> int:
        """Number of stored wrapped blobs (all key ids)."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM wrapped_keys").fetchone()[0])
