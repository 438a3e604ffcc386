"""Chunked transfer of large payloads over gRPC streams, with SHA-256 and resume from an offset.

A sender yields `ucadi.v1.Chunk` messages; a `ChunkReceiver` appends them to a file, checking
contiguity and size as they arrive and the digest at the end, so memory stays bounded by one
chunk whatever the payload size. A receiver that lost its connection keeps the partial file
and reports `received` bytes; the sender resumes from there.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ucadi.digests import TailHasher, file_digest, hash_file, remember
from ucadi.errors import UcadiError
from ucadi.v1 import common_pb2

DEFAULT_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 4 << 20
__all__ = ["DEFAULT_CHUNK_BYTES", "MAX_CHUNK_BYTES", "ChunkReceiver", "TransferError",
           "file_digest", "iter_file_chunks", "iter_payload_chunks", "receive",
           "receive_to_file"]


class TransferError(UcadiError):
    """A chunked transfer was out of order, oversize, truncated or failed its digest."""


def iter_payload_chunks(payload: bytes | memoryview, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                        offset: int = 0, sha256: str | None = None
                        ) -> Iterator[common_pb2.Chunk]:
    """Chunks of an in-memory payload, starting at `offset` (for a resumed transfer); the
    digest is computed if not given."""
    digest = sha256 or hashlib.sha256(payload).hexdigest()
    view = memoryview(payload)
    total = len(payload)
    if total == 0:
        yield common_pb2.Chunk(offset=0, data=b"", total_size=0, sha256=digest)
        return
    for start in range(offset, total, chunk_bytes):
        yield common_pb2.Chunk(offset=start, data=bytes(view[start:start + chunk_bytes]),
                               total_size=total, sha256=digest)


def iter_file_chunks(path: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES, offset: int = 0,
                     sha256: str | None = None) -> Iterator[common_pb2.Chunk]:
    """Chunks of a file, read lazily, starting at `offset`; the digest is computed if not given."""
    path = Path(path)
    digest = sha256 or file_digest(path)
    total = path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(offset)
        position = offset
        if total == 0:
            yield common_pb2.Chunk(offset=0, data=b"", total_size=0, sha256=digest)
            return
        while position < total:
            data = handle.read(chunk_bytes)
            yield common_pb2.Chunk(offset=position, data=data, total_size=total, sha256=digest)
            position += len(data)


class ChunkReceiver:
    """Assembles a chunk stream into `path`, verifying order, size limit and digest.

    Use `feed()` per chunk and `finish()` at the end of the stream; `finish()` fsyncs the file
    before returning (unless made with durable=False), so a caller may acknowledge the transfer
    as durable. The digest is
    computed as the bytes arrive (a resumed transfer hashes its partial file once), and
    remembered for the file (`ucadi.digests`), so sending it on costs no second read.
    """

    def __init__(self, path: Path, max_bytes: int, resume: bool = False,
                 durable: bool = True) -> None:
        """`durable=False` skips the fsync for a file its owner would fetch again after a crash
        rather than read back (a site's copy of a global version)."""
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.durable = durable
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.received = self.path.stat().st_size if resume and self.path.exists() else 0
        self._hasher = hash_file(self.path) if self.received else TailHasher()
        self._handle = open(self.path, "r+b" if self.received else "wb")
        self._handle.seek(self.received)
        self.total_size: int | None = None
        self.sha256: str | None = None
        # After finish(): whether the payload ends with the SHA-256 of its preceding bytes
        # (ciphertext and plaintext-update files), so their readers need not hash it again.
        self.trailer_ok = False

    def feed(self, chunk: common_pb2.Chunk) -> None:
        """Append one chunk; raises TransferError on a gap, overlap, size or digest change."""
        # Read the bytes field once: every read of it copies the whole chunk (protobuf upb).
        data = chunk.data
        if len(data) > MAX_CHUNK_BYTES:
            raise TransferError(
                f"chunk of {len(data)} bytes exceeds the {MAX_CHUNK_BYTES}-byte chunk limit")
        if chunk.total_size > self.max_bytes:
            raise TransferError(
                f"payload of {chunk.total_size} bytes exceeds the limit of {self.max_bytes} bytes")
        if self.total_size is None:
            self.total_size, self.sha256 = chunk.total_size, chunk.sha256
        elif (chunk.total_size, chunk.sha256) != (self.total_size, self.sha256):
            raise TransferError("total_size or sha256 changed in the middle of a transfer")
        if chunk.offset != self.received:
            raise TransferError(
                f"chunk at offset {chunk.offset} but {self.received} bytes were received so far; "
                "chunks must be contiguous (resume from the reported offset)")
        if self.received + len(data) > chunk.total_size:
            raise TransferError("chunks run past the announced total_size")
        self._handle.write(data)
        self._hasher.update(data)
        self.received += len(data)

    def finish(self) -> Path:
        """Close, check completeness and digest, fsync (if durable); returns the assembled
        file's path."""
        self._handle.flush()
        if self.durable:
            os.fsync(self._handle.fileno())
        self._handle.close()
        if self.total_size is None:
            raise TransferError("the stream carried no chunk")
        if self.received != self.total_size:
            raise TransferError(
                f"transfer incomplete: {self.received} of {self.total_size} bytes received")
        actual = self._hasher.hexdigest()
        if actual != self.sha256:
            self.path.unlink(missing_ok=True)
            raise TransferError(f"payload digest mismatch: sent {self.sha256}, received {actual}")
        remember(self.path, actual)
        self.trailer_ok = self._hasher.trailer_ok()
        return self.path

    def abort(self, keep_partial: bool = True) -> None:
        """Close after a broken stream; keep the partial file for a resumed transfer."""
        if not self._handle.closed:
            self._handle.flush()
            self._handle.close()
        if not keep_partial:
            self.path.unlink(missing_ok=True)


def receive(chunks: Iterable[common_pb2.Chunk], path: Path, max_bytes: int) -> ChunkReceiver:
    """Assemble a whole chunk stream into `path` (no resume); returns the finished receiver
    (its path, digest and `trailer_ok`)."""
    receiver = ChunkReceiver(path, max_bytes)
    try:
        for chunk in chunks:
            receiver.feed(chunk)
    except BaseException:
        receiver.abort(keep_partial=False)
        raise
    receiver.finish()
    return receiver


def receive_to_file(chunks: Iterable[common_pb2.Chunk], path: Path, max_bytes: int) -> Path:
    """Assemble a whole chunk stream into `path` (no resume); returns the verified path."""
    return receive(chunks, path, max_bytes).path
