"""Plaintext model updates: the encryption-off mode, for benchmarking the protocol's overhead.

A federation runs without encryption only when its configuration says so explicitly
(`encryption.enabled: false`); the aggregator then sees every update, which defeats UCADI's
purpose, so this exists to measure what encryption costs, not for hospitals.

File: magic "UCPL" | version u8 | round u32 | value count u64 | weight u64 | layout hash (32 B)
| float32 weighted values (w * x) | SHA-256 of everything before it (32 B). A sum has the same
layout with the summed weight and values.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ucadi.digests import remember
from ucadi.errors import UcadiError

PLAINTEXT_SET = "plaintext"
_MAGIC = b"UCPL"
_VERSION = 1
_HEADER = struct.Struct("<4sBIQQ32s")
_DIGEST = 32


class PlainUpdateError(UcadiError):
    """A plaintext update file is malformed or does not match."""


@dataclass(frozen=True)
class PlainHeader:
    """What a plaintext update is."""

    round_number: int
    value_count: int
    weight: int
    layout_hash: bytes


def write_plain(path: Path, weighted: np.ndarray, weight: int, round_number: int,
                layout_hash: bytes, durable: bool = True) -> Path:
    """Write weight * values (already multiplied) as float32 with a trailing digest, fsynced
    unless `durable` is False (a site's upload file, as for ciphertexts)."""
    values = np.ascontiguousarray(weighted, dtype=np.float32)
    if not np.isfinite(values).all():
        raise PlainUpdateError("update holds NaN or Inf; nothing was written")
    header = _HEADER.pack(_MAGIC, _VERSION, round_number, values.size, weight, layout_hash)
    digest = hashlib.sha256(header)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(header)
        data = memoryview(values).cast("B")
        handle.write(data)
        digest.update(data)
        trailer = digest.digest()
        handle.write(trailer)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    digest.update(trailer)
    remember(path, digest.hexdigest())
    return path


def read_plain(path: Path, verify_digest: bool = True) -> tuple[PlainHeader, np.ndarray]:
    """Header and float32 weighted values of a plaintext update, digest checked unless the
    caller checked it as the bytes arrived (`verify_digest=False`)."""
    raw = Path(path).read_bytes()
    if len(raw) < _HEADER.size + _DIGEST:
        raise PlainUpdateError(f"{path} is too short for a plaintext update")
    magic, version, round_number, count, weight, layout = _HEADER.unpack_from(raw)
    if magic != _MAGIC or version != _VERSION:
        raise PlainUpdateError(f"{path} is not a version-{_VERSION} plaintext update")
    if len(raw) != _HEADER.size + 4 * count + _DIGEST:
        raise PlainUpdateError(f"{path} has {len(raw)} bytes; {count} values need "
                               f"{_HEADER.size + 4 * count + _DIGEST}")
    if verify_digest and hashlib.sha256(raw[:-_DIGEST]).digest() != raw[-_DIGEST:]:
        raise PlainUpdateError(f"{path} fails its SHA-256 check (truncated or tampered)")
    values = np.frombuffer(raw, dtype=np.float32, count=count, offset=_HEADER.size)
    return PlainHeader(round_number, count, weight, layout), values


def sum_plain(paths: list[Path], out_path: Path) -> Path:
    """Add plaintext updates (float64 accumulation) into one file."""
    headers, total = [], None
    for path in paths:
        header, values = read_plain(path)
        headers.append(header)
        total = values.astype(np.float64) if total is None else total + values
    if total is None:
        raise PlainUpdateError("no updates to sum")
    first = headers[0]
    if any((h.round_number, h.value_count, h.layout_hash) !=
           (first.round_number, first.value_count, first.layout_hash) for h in headers):
        raise PlainUpdateError("updates differ in round, size or layout")
    return write_plain(out_path, total, sum(h.weight for h in headers), first.round_number,
                       first.layout_hash)


def plain_average(path: Path, digest_checked: bool = False) -> np.ndarray:
    """FedAvg vector (float32, as the model holds it) of a summed plaintext file."""
    header, values = read_plain(path, verify_digest=not digest_checked)
    if header.weight < 1:
        raise PlainUpdateError(f"total weight {header.weight} is not positive")
    return np.divide(values, header.weight, dtype=np.float32)
