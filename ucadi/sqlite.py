"""SQLite as every service uses it: autocommit connections whose multi-statement changes are
explicit `BEGIN IMMEDIATE` transactions (the write lock taken at once, so two writers never
deadlock upgrading a read lock), committed whole or rolled back whole."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block's statements as one transaction on an autocommit connection
    (`isolation_level=None`): COMMIT at the end, ROLLBACK and re-raise on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
