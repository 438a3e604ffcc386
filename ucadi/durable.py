"""Making a file's arrival durable: after os.replace/rename, fsync the directory too."""

from __future__ import annotations

import os
from pathlib import Path


def write_durably(path: Path, data: bytes | memoryview) -> None:
    """Replace `path` with `data` atomically and durably: a reader sees the old file or the
    whole new one, and after a crash the new one is there once this returns."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or a new file inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
