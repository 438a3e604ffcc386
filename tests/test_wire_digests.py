"""One-pass digests (`ucadi.digests`) and the chunk receiver that relies on them."""

from __future__ import annotations

import hashlib
import os

import pytest

from ucadi.digests import TailHasher, file_digest, remember
from ucadi.wire import ChunkReceiver, TransferError, iter_file_chunks
from ucadi.wire.chunks import receive


def trailed(body: bytes) -> bytes:
    """body followed by its SHA-256: the ciphertext and plaintext-update file layout."""
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("cuts", [[], [1], [31], [32], [33], [5, 6, 7], [40, 100]])
def test_tail_hasher_matches_hashlib_whatever_the_pieces(cuts):
    data = trailed(os.urandom(180))
    hasher, start = TailHasher(), 0
    for cut in cuts + [len(data)]:
        hasher.update(data[start:cut])
        start = cut
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    assert hasher.trailer_ok()


def test_tail_hasher_rejects_a_wrong_or_missing_trailer():
    data = bytearray(trailed(b"x" * 100))
    data[3] ^= 1
    for stream in (bytes(data), b"short", b""):
        hasher = TailHasher()
        hasher.update(stream)
        assert not hasher.trailer_ok()


def test_file_digest_is_recomputed_after_a_rewrite(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"first")
    remember(path, hashlib.sha256(b"first").hexdigest())
    assert file_digest(path) == hashlib.sha256(b"first").hexdigest()
    path.write_bytes(b"second, longer")
    assert file_digest(path) == hashlib.sha256(b"second, longer").hexdigest()


def test_receiver_checks_digest_and_trailer_in_one_pass_and_resumes(tmp_path):
    source = tmp_path / "source.ct"
    source.write_bytes(trailed(os.urandom(5000)))
    chunks = list(iter_file_chunks(source, chunk_bytes=1024))
    partial = tmp_path / "partial.ct"
    first = ChunkReceiver(partial, max_bytes=1 << 20)
    for chunk in chunks[:2]:
        first.feed(chunk)
    first.abort(keep_partial=True)
    resumed = ChunkReceiver(partial, max_bytes=1 << 20, resume=True)
    assert resumed.received == 2048
    for chunk in chunks[2:]:
        resumed.feed(chunk)
    assert resumed.finish().read_bytes() == source.read_bytes()
    assert resumed.trailer_ok
    assert file_digest(partial) == hashlib.sha256(source.read_bytes()).hexdigest()


def test_receiver_flags_a_payload_without_a_valid_trailer(tmp_path):
    source = tmp_path / "plain.bin"
    source.write_bytes(os.urandom(3000))
    received = receive(iter_file_chunks(source, chunk_bytes=700), tmp_path / "out", 1 << 20)
    assert not received.trailer_ok


def test_receiver_rejects_a_payload_that_differs_from_its_announced_digest(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(3000))
    chunks = list(iter_file_chunks(source, chunk_bytes=1000))
    chunks[1].data = bytes(len(chunks[1].data))
    with pytest.raises(TransferError, match="digest mismatch"):
        receive(chunks, tmp_path / "out", 1 << 20)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("durable", [True, False])
def test_receiver_fsyncs_before_finishing_unless_the_file_is_a_refetchable_copy(
        tmp_path, monkeypatch, durable):
    source = tmp_path / "source.ct"
    source.write_bytes(trailed(os.urandom(3000)))
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    receiver = ChunkReceiver(tmp_path / "copy.ct", max_bytes=1 << 20, durable=durable)
    for chunk in iter_file_chunks(source, chunk_bytes=1000):
        receiver.feed(chunk)
    assert receiver.finish().read_bytes() == source.read_bytes() and receiver.trailer_ok
    assert len(synced) == (1 if durable else 0)
