"""The central processes as `python -m bench.sites` measures them: CPU seconds and resident
memory sampled every SAMPLE_S from /proc, and the files and SQLite rows a state folder holds."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

SAMPLE_S = 0.25  # how often the central processes' CPU and memory are read


class Sampler:
    """Reads the central processes' CPU seconds and resident memory every SAMPLE_S."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        # (time, {process: (CPU seconds, resident bytes, of which anonymous: heap)})
        self.samples: list[tuple[float, dict[str, tuple[float, int, int]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.take()
            self._stop.wait(SAMPLE_S)

    def take(self) -> None:
        """One sample now."""
        self.samples.append((time.time(), {
            name: (cpu_seconds(pid), rss_bytes(pid), status_bytes(pid, "RssAnon"))
            for name, pid in self.pids.items()}))

    def stop(self) -> None:
        """Stop sampling (after a last sample)."""
        self._stop.set()
        self._thread.join()
        self.take()

    def cpu_between(self, name: str, start: float, stop: float) -> float:
        """CPU seconds `name` used between two wall-clock times (nearest samples)."""
        def at(when: float) -> float:
            return min(self.samples, key=lambda s: abs(s[0] - when))[1][name][0]
        return at(stop) - at(start)

    def peak_rss(self, name: str, start: float = 0.0, anonymous: bool = False) -> int:
        """Largest sampled resident memory of `name` from `start` on (`anonymous`: only its
        heap, not mapped files)."""
        return max(s[1][name][2 if anonymous else 1] for s in self.samples if s[0] >= start)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_bytes(pid: int, field: str) -> int:
    """A memory figure of /proc/PID/status (VmRSS, VmHWM, RssFile...) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def rss_bytes(pid: int) -> int:
    return status_bytes(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int:
    return status_bytes(pid, "VmHWM")


def state_counts(folder: Path) -> dict[str, int]:
    """Files under a service's state folder and the rows of its SQLite databases."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    rows = 0
    for db in (p for p in files if p.suffix in (".db", ".sqlite", ".sqlite3")):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            tables = [r[0] for r in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            rows += sum(connection.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
                        for t in tables)
    return {"files": len(files), "sqlite_rows": rows}
