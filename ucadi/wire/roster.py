"""Compact site sets: the federation's roster once, then bitmaps over it (issue 25).

With 1,000 sites, a list of the round's expected and uploaded sites in every reply to every
site made O(sites^2) bytes and work per round (78 KB per status reply). A site now keeps the
roster (every site that ever joined, sorted by name) under its SHA-256 digest, and the
aggregator names a round's sites as a bitmap over it (125 bytes at 1,000 sites), sending the
roster itself only to a caller whose digest is not current. Both sides use this module.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ucadi.errors import UcadiError


def roster_digest(names: Sequence[str]) -> bytes:
    """SHA-256 over the names, each followed by a newline, in order."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\n")
    return digest.digest()


@dataclass(frozen=True)
class Roster:
    """The sorted names of every site that ever joined, their digest and each one's index."""

    names: tuple[str, ...]
    digest: bytes = b""
    index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, names: Iterable[str]) -> Roster:
        ordered = tuple(sorted(set(names)))
        return cls(ordered, roster_digest(ordered), {n: i for i, n in enumerate(ordered)})

    def encode(self, members: Iterable[str]) -> bytes:
        """The bitmap of `members` (each must be on the roster)."""
        bits = bytearray((len(self.names) + 7) // 8)
        for name in members:
            i = self.index.get(name)
            if i is None:
                raise UcadiError(f"site {name!r} is not on the federation's roster")
            bits[i >> 3] |= 1 << (i & 7)
        return bytes(bits)

    def decode(self, digest: bytes, bitmap: bytes) -> list[str]:
        """The names a bitmap over this roster stands for, in roster order."""
        if digest != self.digest:
            raise UcadiError("a site set refers to another roster than the one held "
                             f"({digest.hex()[:12]} against {self.digest.hex()[:12]})")
        if len(bitmap) != (len(self.names) + 7) // 8:
            raise UcadiError(f"a site set of {len(bitmap)} bytes does not fit a roster of "
                             f"{len(self.names)} sites")
        return [name for i, name in enumerate(self.names) if bitmap[i >> 3] >> (i & 7) & 1]


class RosterCache:
    """A site's copy of the roster, replaced by the one a reply carries when it changed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.roster = Roster.of(())

    @property
    def digest(self) -> bytes:
        return self.roster.digest

    def names(self, site_set: Any, carried: Any) -> list[str]:
        """Decode a reply's SiteSet, first adopting the Roster the reply carries (if any)."""
        with self._lock:
            if carried is not None and carried.digest and carried.digest != self.roster.digest:
                roster = Roster.of(carried.sites)
                if roster.digest != carried.digest:
                    raise UcadiError("the roster received does not match its digest")
                self.roster = roster
            return self.roster.decode(site_set.roster_digest, site_set.members)
