"""Durable per-(federation, round) ciphertext sums of the sum service.

Durability over replay: a contribution is acknowledged only after its ciphertext file is
fsynced in the round's folder AND the SQLite transaction naming it (and the site as a
contributor) has committed. The running sum of an open round lives in memory (one uint64 per
slot), updated as each contribution is accepted, so accepting costs one addition, not a rewrite
of the whole sum; after a restart it is rebuilt from the committed contribution files. Sealing
closes the round (committed first) and answers with the sum serialized from memory; a
background writer then stores it once (fsynced, named by the round's row) and only then drops
the contributions, so until that commit a repeated seal, even after a restart, rebuilds the same
sum from them. Files no committed row names are deleted on start. So a restart loses no
accepted contribution and never counts one twice.

Each round accepts ciphertexts of exactly one key id, parameter set, layout, slot count and
block range (the replica's shard), one per site, at most max_sites of them.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from services.crypto.sumtypes import (
    MAX_STORED_INTEGER,
    DuplicateSiteError,
    RoundNotFoundError,
    RoundSpec,
    RoundState,
    RoundStateError,
    SealedSum,
    SumRoundState,
    _add_into,
    serialize_sum,
    validate_spec,
)
from ucadi.digests import remember
from ucadi.durable import fsync_dir, write_durably
from ucadi.errors import UcadiError
from ucadi.lwe.prepared import round_seed
from ucadi.lwe.scheme import Ciphertext, check_contribution, merged_seeds
from ucadi.lwe.serialization import serialized_size
from ucadi.lwe.stream import CiphertextFile, open_verified
from ucadi.ops.priority import background_pool
from ucadi.sqlite import immediate_transaction
from ucadi.v1 import common_pb2
from ucadi.wire.chunks import file_digest, receive

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    federation TEXT NOT NULL, round INTEGER NOT NULL, key_id TEXT NOT NULL,
    parameter_set TEXT NOT NULL, layout_hash BLOB NOT NULL, slot_count INTEGER NOT NULL,
    block_start INTEGER NOT NULL, block_stop INTEGER NOT NULL, state TEXT NOT NULL,
    accumulator TEXT, opened_at REAL NOT NULL, PRIMARY KEY (federation, round));
CREATE TABLE IF NOT EXISTS contributions (
    federation TEXT NOT NULL, round INTEGER NOT NULL, site TEXT NOT NULL, sha256 TEXT NOT NULL,
    accepted_at REAL NOT NULL, path TEXT NOT NULL, PRIMARY KEY (federation, round, site));
"""


# The value types and checks of a round live in sumtypes; importable from here too.
__all__ = ["DuplicateSiteError", "RoundNotFoundError", "RoundSpec", "RoundState",
           "RoundStateError", "SealedSum", "SumRoundState", "SumStore", "serialize_sum",
           "validate_spec"]


class SumStore:
    """All rounds of one sum-service replica, under `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir)
        self.incoming = self.root / "incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.root / "sums.sqlite", check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        # Running sums of open rounds: (federation, round) -> Ciphertext.
        self._sums: dict[tuple[str, int], Ciphertext] = {}
        # Sealed sums (serialized, and their SHA-256) until the background writer stored them.
        self._serialized: dict[tuple[str, int], tuple[memoryview, str]] = {}
        # Round seeds of the sites each open round has heard of (dropped once it is stored).
        self._seeds: dict[tuple[str, int], _RoundSeeds] = {}
        # Storing a sealed sum waits on nothing: it yields the CPU to the fetches of that sum.
        self._writer = background_pool("sum-writer")
        self._recover()

    def close(self) -> None:
        """Finish writing sealed sums, then close the database."""
        self._writer.shutdown(wait=True)
        self._db.close()

    def _recover(self) -> None:
        """Delete uncommitted files: partial uploads and sums no committed row names."""
        shutil.rmtree(self.incoming, ignore_errors=True)
        self.incoming.mkdir(parents=True, exist_ok=True)
        committed = {row[0] for row in self._db.execute(
            "SELECT accumulator FROM rounds WHERE accumulator IS NOT NULL "
            "UNION SELECT path FROM contributions")}
        for path in (self.root / "rounds").glob("*/*/*"):
            if path.is_file() and str(path.relative_to(self.root)) not in committed:
                path.unlink()  # written before a crash, never committed (or already summed)

    @staticmethod
    def _storable(round_number: int) -> None:
        if not 0 <= round_number <= MAX_STORED_INTEGER:  # no such round can have been opened
            raise RoundNotFoundError(f"round {round_number} does not exist: rounds are numbered "
                                     "0 to 2^63-1")

    def _row(self, federation: str, round_number: int) -> RoundState:
        self._storable(round_number)
        row = self._db.execute("SELECT * FROM rounds WHERE federation = ? AND round = ?",
                               (federation, round_number)).fetchone()
        if row is None:
            raise RoundNotFoundError(f"round {round_number} of federation {federation!r} was "
                                     "not opened on this sum service (call OpenRound first)")
        spec = RoundSpec(row[0], row[1], row[2], row[3], bytes(row[4]), row[5], row[6], row[7])
        contributed = self._db.execute(
            "SELECT site, path, sha256 FROM contributions WHERE federation = ? AND round = ? "
            "ORDER BY site", (federation, round_number)).fetchall()
        return RoundState(spec, row[8], tuple(r[0] for r in contributed),
                          self.root / row[9] if row[9] else None,
                          tuple(self.root / r[1] for r in contributed),
                          tuple(r[2] for r in contributed))

    def status(self, federation: str, round_number: int) -> RoundState:
        """Current state of a round."""
        with self._lock:
            return self._row(federation, round_number)

    def status_of(self, federation: str, round_number: int, site: str
                  ) -> tuple[RoundState, int]:
        """A round's state listing only `site`'s contribution (if it holds one), and how many
        contributions it holds: a few rows read, however many sites contributed."""
        with self._lock:
            spec = self._spec(federation, round_number)
            state, accumulator = self._db.execute(
                "SELECT state, accumulator FROM rounds WHERE federation = ? AND round = ?",
                (federation, round_number)).fetchone()
            held = self._db.execute("SELECT path, sha256 FROM contributions WHERE federation = ? "
                                    "AND round = ? AND site = ?",
                                    (federation, round_number, site)).fetchone()
            count = self._count(federation, round_number)
        return RoundState(spec, state, (site,) if held else (),
                          self.root / accumulator if accumulator else None,
                          (self.root / held[0],) if held else (),
                          (held[1],) if held else ()), count

    def open_round(self, spec: RoundSpec) -> RoundState:
        """Open a round; reopening with the same spec is a no-op, with another an error."""
        spec = validate_spec(spec)
        with self._lock:
            try:
                existing = self._row(spec.federation, spec.round)
            except RoundNotFoundError:
                self._db.execute("INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
                                 "NULL, ?)", (spec.federation, spec.round, spec.key_id,
                                              spec.parameter_set, spec.layout_hash,
                                              spec.slot_count, spec.block_start,
                                              spec.block_stop, SumRoundState.OPEN.value,
                                              time.time()))
                return self._row(spec.federation, spec.round)
        if existing.spec != spec:
            raise RoundStateError(f"round {spec.round} of {spec.federation!r} is already open "
                                  "with different key, parameters, layout or block range")
        return existing

    def add_contribution(self, federation: str, round_number: int, site: str,
                         chunks: Iterable[common_pb2.Chunk], vouched_sha256: str = "",
                         other_sites: Iterable[str] = ()) -> tuple[int, str]:
        """Receive, verify and durably add one site's ciphertext; (contributions the round now
        holds, its sha256). `vouched_sha256`: the aggregator sends the upload it accepted from
        the site, with this digest; it replaces another contribution held for the site (one
        the site sent itself and the aggregator refused). `other_sites`: the federation's
        other sites, whose public round seeds this ciphertext may not use (it would knock that
        site out of the round: its own ciphertext would then repeat a summed seed).

        The work per contribution does not grow with the round's contributors (issue 25): the
        checks read the round's row and this site's, the seeds of the other sites are derived
        once per round (`_RoundSeeds`), and the running sum stays in memory."""
        with self._lock:
            self._check_accepting(federation, round_number, site, vouched_sha256)
            spec = self._spec(federation, round_number)
        expected = spec.expected_header()
        upload = self.incoming / f"{uuid.uuid4().hex}.ct"
        try:
            receiver = receive(chunks, upload, max_bytes=serialized_size(expected))
            received = open_verified(upload, verify_digest=not receiver.trailer_ok)
            check_contribution(received.header)
            self._round_seeds(spec).refuse_foreign(site, received.seeds, other_sites)
            # frac_bits is checked against the running sum when the two are added.
            expected.check_compatible(replace(received.header, frac_bits=0))
            digest = file_digest(upload)
            if vouched_sha256 and digest != vouched_sha256:
                raise UcadiError(f"the ciphertext's SHA-256 {digest[:12]}… is not the "
                                 f"{vouched_sha256[:12]}… it was sent as")
            with self._lock:
                if self._check_accepting(federation, round_number, site, vouched_sha256):
                    self._discard(self._row(federation, round_number), {site})
                self._commit(spec, site, upload, received, digest)
                return self._count(federation, round_number), digest
        finally:
            upload.unlink(missing_ok=True)

    def _spec(self, federation: str, round_number: int) -> RoundSpec:
        """The round's spec (its row only)."""
        self._storable(round_number)
        row = self._db.execute("SELECT * FROM rounds WHERE federation = ? AND round = ?",
                               (federation, round_number)).fetchone()
        if row is None:
            return self._row(federation, round_number).spec  # raises RoundNotFoundError
        return RoundSpec(row[0], row[1], row[2], row[3], bytes(row[4]), row[5], row[6], row[7])

    def _count(self, federation: str, round_number: int) -> int:
        """Contributions the round holds."""
        return self._db.execute("SELECT COUNT(*) FROM contributions WHERE federation = ? AND "
                                "round = ?", (federation, round_number)).fetchone()[0]

    def _check_accepting(self, federation: str, round_number: int, site: str,
                         vouched_sha256: str = "") -> bool:
        """Raise unless the round takes `site`'s contribution now; True when it holds one the
        new one replaces (vouched for by the aggregator)."""
        self._storable(round_number)
        row = self._db.execute("SELECT state FROM rounds WHERE federation = ? AND round = ?",
                               (federation, round_number)).fetchone()
        if row is None:
            self._row(federation, round_number)  # raises RoundNotFoundError
        if row[0] != SumRoundState.OPEN:
            raise RoundStateError(f"round {round_number} of {federation!r} is {row[0]}; late "
                                  "contributions are refused")
        held = self._db.execute("SELECT sha256 FROM contributions WHERE federation = ? AND "
                                "round = ? AND site = ?",
                                (federation, round_number, site)).fetchone()
        if held is not None and (not vouched_sha256 or held[0] == vouched_sha256):
            raise DuplicateSiteError(f"site {site!r} already contributed to round "
                                     f"{round_number} of {federation!r}")
        return held is not None

    def _round_seeds(self, spec: RoundSpec) -> _RoundSeeds:
        with self._lock:
            return self._seeds.setdefault((spec.federation, spec.round), _RoundSeeds(spec))

    def _discard(self, state: RoundState, sites: set[str], sealing: bool = False) -> RoundState:
        """Delete the contributions of `sites` (and mark the round sealed, if `sealing`) in one
        transaction; the running sum is rebuilt without them when next needed."""
        spec = state.spec
        dropped = [(site, path) for site, path in zip(state.sites, state.contributions,
                                                      strict=True) if site in sites]
        with immediate_transaction(self._db) as db:
            for site, _ in dropped:
                db.execute("DELETE FROM contributions WHERE federation = ? AND round = ? "
                           "AND site = ?", (spec.federation, spec.round, site))
            if sealing:
                db.execute("UPDATE rounds SET state = ? WHERE federation = ? AND round = ?",
                           (SumRoundState.SEALED.value, spec.federation, spec.round))
        if dropped:
            self._sums.pop((spec.federation, spec.round), None)
        for site, path in dropped:
            path.unlink(missing_ok=True)
            log.warning("round %d of %r: dropped %s's contribution (the site sent it itself and "
                        "the aggregator did not accept it)", spec.round, spec.federation, site)
        return self._row(spec.federation, spec.round)

    def _running_sum(self, state: RoundState) -> Ciphertext | None:
        """The open round's sum so far; rebuilt from its contribution files after a restart."""
        key = (state.spec.federation, state.spec.round)
        if key not in self._sums and state.contributions:
            # One file at a time into one body: memory stays one model whatever the site count.
            files = [open_verified(p, verify_digest=False) for p in state.contributions]
            header, seeds = merged_seeds((f.header, f.seeds) for f in files)
            body = np.zeros(header.body_slots, dtype=np.uint64)
            for file in files:
                _add_into(body, file.iter_verified_batches(), header)
            self._sums[key] = Ciphertext(header, seeds, body)
        return self._sums.get(key)

    def _commit(self, spec: RoundSpec, site: str, upload: Path, received: CiphertextFile,
                digest: str) -> None:
        key = (spec.federation, spec.round)
        running = self._sums.get(key)
        if running is None and self._count(spec.federation, spec.round):
            # After a restart or a dropped contribution: rebuilt from the files.
            running = self._running_sum(self._row(spec.federation, spec.round))
        # Checks frac_bits and repeated seeds against what is already summed, before any change.
        header, seeds = merged_seeds([(received.header, received.seeds)] + (
            [(running.header, running.seeds)] if running is not None else []))
        try:
            # Added batch by batch into the running sum (zeros for the first contribution): no
            # second whole-model array.
            body = (running.body if running is not None
                    else np.zeros(received.header.body_slots, dtype=np.uint64))
            _add_into(body, received.iter_body_batches(), header)
            self._sums[key] = Ciphertext(header, seeds, body)
            folder = self.root / "rounds" / spec.federation / str(spec.round)
            folder.mkdir(parents=True, exist_ok=True)
            stored = folder / f"{site}-{uuid.uuid4().hex[:8]}.ct"
            upload.rename(stored)  # already fsynced by the chunk receiver
            fsync_dir(folder)
            try:
                with immediate_transaction(self._db) as db:
                    db.execute("INSERT INTO contributions VALUES (?, ?, ?, ?, ?, ?)",
                               (spec.federation, spec.round, site, digest, time.time(),
                                str(stored.relative_to(self.root))))
            except BaseException:
                stored.unlink(missing_ok=True)
                raise
        except BaseException:
            # The sum may hold part or all of this contribution: rebuild it from the committed
            # files when it is next needed.
            self._sums.pop(key, None)
            raise

    def seal(self, federation: str, round_number: int,
             sites: Sequence[str] = ()) -> SealedSum:
        """Close a round to contributions and give its sum (repeats give the same sum).
        `sites`: the contributions the sum must hold (the aggregator's accepted uploads); any
        other is discarded first; empty: all of them."""
        key = (federation, round_number)
        with self._lock:
            state = self._row(federation, round_number)
            if state.accumulator is not None:
                return SealedSum(state, path=state.accumulator)
            if not state.sites:
                raise RoundStateError(f"round {round_number} of {federation!r} has no "
                                      "contributions yet; nothing to seal")
            if state.state == SumRoundState.OPEN:
                state = self._close(state, set(sites or state.sites))
            if key not in self._serialized:
                total = self._running_sum(state)
                assert total is not None  # the round holds at least one contribution
                self._serialized[key] = serialize_sum(total)
                self._writer.submit(self._store_sum, state, *self._serialized[key])
            data, digest = self._serialized[key]
            return SealedSum(state, data=data, sha256=digest)

    def fetch(self, federation: str, round_number: int) -> SealedSum:
        """A sealed round's sum, for FetchSum (the stored file, or the bytes being stored).
        Every site fetches it: answered from the round's row and memory, without reading the
        round's contributions (issue 25), except to rebuild a sum after a restart."""
        self._storable(round_number)
        key = (federation, round_number)
        with self._lock:
            row = self._db.execute(
                "SELECT state, accumulator FROM rounds WHERE federation = ? AND round = ?",
                key).fetchone()
            if row is None:
                self._row(federation, round_number)  # raises RoundNotFoundError
            if row[0] != SumRoundState.SEALED:
                raise RoundStateError(f"round {round_number} of {federation!r} is still open: "
                                      "its sum exists once the aggregator seals it")
            if row[1]:
                return SealedSum(None, path=self.root / row[1])
            if key in self._serialized:
                data, digest = self._serialized[key]
                return SealedSum(None, data=data, sha256=digest)
        return self.seal(federation, round_number)

    def _close(self, state: RoundState, keep: set[str]) -> RoundState:
        """Mark an open round sealed holding exactly the contributions of `keep`."""
        missing = sorted(keep - set(state.sites))
        if missing:
            raise RoundStateError(f"round {state.spec.round} of {state.spec.federation!r} has no "
                                  f"contribution from {', '.join(missing)}; it holds "
                                  f"{', '.join(state.sites) or 'none'}")
        return self._discard(state, set(state.sites) - keep, sealing=True)

    def _store_sum(self, state: RoundState, data: memoryview, digest: str) -> None:
        """Write a sealed sum once, durably, then drop its contributions (background)."""
        spec = state.spec
        key = (spec.federation, spec.round)
        folder = self.root / "rounds" / spec.federation / str(spec.round)
        path = folder / f"sum-{len(state.sites)}-{uuid.uuid4().hex[:8]}.ct"
        try:
            write_durably(path, data)
            remember(path, digest)
            with self._lock:
                self._db.execute("UPDATE rounds SET accumulator = ? WHERE federation = ? AND "
                                 "round = ?", (str(path.relative_to(self.root)), *key))
                self._sums.pop(key, None)
                self._seeds.pop(key, None)
                for contribution in state.contributions:
                    contribution.unlink(missing_ok=True)  # the sum holds them now
        except Exception:  # the contributions stay; the next seal of the round retries
            log.exception("storing the sum of round %d of %r failed", spec.round,
                          spec.federation)
            path.unlink(missing_ok=True)
        finally:
            with self._lock:
                self._serialized.pop(key, None)


class _RoundSeeds:
    """The public round seeds of the sites a round has heard of, by seed: each contribution's
    check that it does not use another site's round seed derives only the seeds of sites new
    since the last contribution (one SHA-256 each), not one per site every time."""

    def __init__(self, spec: RoundSpec) -> None:
        self.spec = spec
        self._key_id = bytes.fromhex(spec.key_id)
        self._owners: dict[bytes, str] = {}
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def refuse_foreign(self, site: str, seeds: Sequence[bytes], other_sites: Iterable[str]
                       ) -> None:
        """Refuse a ciphertext of `site` that uses another site's public round seed."""
        spec = self.spec
        with self._lock:
            for other in set(other_sites) - self._known:
                self._known.add(other)
                self._owners[round_seed(self._key_id, spec.federation, spec.round,
                                        other)] = other
            for seed in seeds:
                owner = self._owners.get(seed)
                if owner is not None and owner != site:
                    raise UcadiError(f"{site}'s ciphertext for round {spec.round} uses "
                                     f"{owner}'s round seed; a site encrypts with its own round "
                                     "seed or a fresh random one")
