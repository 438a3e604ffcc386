"""SHA-256 of files: one pass for both digests, and no second pass to send what was just made.

Ciphertexts and plaintext updates are hashed in two ways: the transfer digest (SHA-256 of the
whole file, carried by chunked streams) and the trailing digest (the file's last 32 bytes are
the SHA-256 of everything before them). Both come from one pass: a `TailHasher` hashes all but
the last 32 bytes seen, and SHA-256(body || tail) is that state continued with the tail.

A process that writes or receives a file `remember`s its transfer digest, keyed by the file's
identity (device, inode, size, modification time in ns: it survives a rename into place, not
a rewrite), and `file_digest` answers from there without re-reading. Only the transfer digest
is cached, never a verdict on integrity: the receiver of a transfer checks the digest itself,
so a stale entry could only fail a transfer, not let a corrupted file through.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

DIGEST_BYTES = 32
_READ_BLOCK = 1 << 20
_CACHE_ENTRIES = 512

_Identity = tuple[int, int, int, int]
_known: OrderedDict[_Identity, str] = OrderedDict()
_lock = threading.Lock()


def _identity(path: Path) -> _Identity:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class TailHasher:
    """One pass over a byte stream giving SHA-256(all) and whether the last 32 bytes are the
    SHA-256 of the bytes before them (the trailing-digest file formats)."""

    def __init__(self) -> None:
        self._body = hashlib.sha256()
        self._tail = b""

    def update(self, data: bytes | memoryview) -> None:
        """Feed the next bytes of the stream."""
        view = memoryview(data)
        if len(view) >= DIGEST_BYTES:  # the old tail is body now; keep the new last 32 bytes
            self._body.update(self._tail)
            self._body.update(view[:-DIGEST_BYTES])
            self._tail = bytes(view[-DIGEST_BYTES:])
            return
        joined = self._tail + bytes(view)
        cut = max(0, len(joined) - DIGEST_BYTES)
        self._body.update(joined[:cut])
        self._tail = joined[cut:]

    def hexdigest(self) -> str:
        """SHA-256 of everything fed so far (hex)."""
        whole = self._body.copy()
        whole.update(self._tail)
        return whole.hexdigest()

    def trailer_ok(self) -> bool:
        """Whether the stream ends with the SHA-256 of what precedes it."""
        return len(self._tail) == DIGEST_BYTES and self._body.digest() == self._tail


def remember(path: Path, sha256_hex: str) -> None:
    """Record the transfer digest just computed for the file now at `path`."""
    key = _identity(path)
    with _lock:
        _known[key] = sha256_hex
        _known.move_to_end(key)
        while len(_known) > _CACHE_ENTRIES:
            _known.popitem(last=False)


def hash_file(path: Path) -> TailHasher:
    """Read a file once through a TailHasher (both digests), remembering its transfer digest;
    the hasher can go on with bytes appended later (a resumed transfer)."""
    hasher = TailHasher()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_READ_BLOCK), b""):
            hasher.update(block)
    remember(Path(path), hasher.hexdigest())
    return hasher


def file_digest(path: Path) -> str:
    """Lower-case hex SHA-256 of a file (read only if this process has not just hashed it)."""
    path = Path(path)
    with _lock:
        found = _known.get(_identity(path))
    return found or hash_file(path).hexdigest()
