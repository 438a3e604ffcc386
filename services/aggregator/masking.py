"""Pairwise masks at the aggregator: it stores and relays a round's keys and sealed shares,
fixes who takes part, collects the survivors' unmasking answers and rebuilds the masks left in
the round's sum (ucadi.lwe.masking; docs/design/multiparty.md). Nothing it holds opens one
site's upload: shares are sealed between sites, and a site answers for each other site with
one kind of share only.

A masked round, beside the round machine's states (rounds.py):

```
 COLLECTING  keys:    expected sites advertise round keys; the key set U1 is fixed when all
                      did, or phase_timeout after the round opened with at least t and
                      min_sites of them (fewer could never seal: only they may upload)
             shares:  U1 sites give one sealed share pair per holder (its neighbours in
                      the round's graph and itself; every U1 site with the complete graph);
                      the participants U2 are fixed when all did, or phase_timeout after U1
                      with at least t and min_sites (less any site left with fewer than t
                      holders in U2);
                      the round then expects U2 only (only U2 may upload)
             uploads: as in any round, and uploads close only once every survivor's and
                      dropped participant's neighbourhood keeps t survivors
 UNMASKING            survivors = the sites the sum holds, dropped = U2 less them; survivors
                      answer until all did, or the (extended) deadline passed with at least t;
                      the masks left in the sum are rebuilt, stored, and the round seals
```

Everything is in the store (fixed sets, keys, sealed shares, answers, the rebuilt masks), so a
restart at any point continues the same phase with the same sets.
"""

from __future__ import annotations

import logging
import time

from services.aggregator.contracts import COLLECTING, UNMASKING, FederationStateError
from services.aggregator.core import RoundCore
from services.aggregator.mask_store import MaskRoundRecord
from services.aggregator.store import RoundRecord
from ucadi.lwe.custodian import IDENTITY_BYTES
from ucadi.lwe.masking import (
    MaskingRound,
    PublicRoundKeys,
    RecoveredSecrets,
    UnmaskingAnswer,
    default_threshold,
    recover_round_secrets,
    unmasking_terms,
)
from ucadi.lwe.neighbours import (
    NeighbourGraph,
    choose_neighbours,
    describe_short,
    round_graph,
    short_neighbourhoods,
)
from ucadi.lwe.shamir import share_from_bytes

log = logging.getLogger(__name__)
_KEY_BYTES = 32


class MaskPhaseError(FederationStateError):
    """A masking message that does not fit the round's phase or sets."""


class MaskExchange:
    """Keys, shares and answers of masked rounds; thread-safe (under the round lock)."""

    def __init__(self, core: RoundCore) -> None:
        self.core = core
        self.config = core.config
        self.store = core.store

    @property
    def enabled(self) -> bool:
        """Whether the federation masks its rounds."""
        return self.config.pairwise_masks

    def _graph_size(self, key_set_size: int) -> tuple[int, int]:
        """(k, t) for a key set of this size: k = 0 (the complete graph) unless
        federation.mask_neighbours names a k below n - 1, or "auto" finds one; t out of a
        site's holders (its neighbours and itself)."""
        n, wanted = key_set_size, self.config.mask_neighbours
        if wanted == -1:
            k, t = choose_neighbours(n) if n >= 2 else (0, 2)
        else:
            k = wanted if 0 < wanted <= n - 2 else 0
            t = default_threshold(k + 1 if k else n)
        holders = k + 1 if k else n
        return k, max(2, min(self.config.mask_threshold or t, holders))

    def _round(self, round_number: int, site: str, state: str = COLLECTING) -> RoundRecord:
        current = self.core.current()
        if not self.enabled:
            raise MaskPhaseError("this federation does not use pairwise masks")
        if current is None or current.round != round_number or current.state != state:
            now = f"round {current.round} ({current.state})" if current else "no round yet"
            raise MaskPhaseError(f"round {round_number} is not {state}; current is {now}")
        if site not in current.expected:
            raise MaskPhaseError(f"{site} is not expected in round {round_number}")
        return current

    def context(self, record: MaskRoundRecord) -> MaskingRound:
        """The masking context of a round whose key set is fixed."""
        assert record.key_set is not None
        return MaskingRound(self.config.federation_id, bytes.fromhex(
            self.config.encryption["key_id"]), record.round, tuple(record.key_set),
            record.threshold, record.neighbours)

    def graph(self, record: MaskRoundRecord) -> NeighbourGraph:
        """The neighbour graph of a round whose key set is fixed (the sites draw the same)."""
        return round_graph(self.context(record))

    # -- keys ------------------------------------------------------------------------------
    def advertise(self, site: str, round_number: int, share_public: bytes,
                  mask_public: bytes, identity: bytes) -> None:
        """Store a site's round keys and identity (the first ones it sent count). The
        identity is relayed as sent: the sites check it, the aggregator cannot."""
        if len(share_public) != _KEY_BYTES or len(mask_public) != _KEY_BYTES:
            raise MaskPhaseError(f"round keys are two {_KEY_BYTES}-byte X25519 public keys")
        if len(identity) != IDENTITY_BYTES:
            raise MaskPhaseError(f"round keys come with the site's {IDENTITY_BYTES}-byte "
                                 f"identity (its X25519 key and the custodian's signature), "
                                 f"got {len(identity)} bytes; the site's trainer is older than "
                                 "this aggregator")
        with self.core.changed:
            current = self._round(round_number, site)
            record = self.store.mask_round(round_number)
            stored = self.store.mask_keys(round_number).get(site)
            if record.key_set is not None and stored is None:
                raise MaskPhaseError(f"round {round_number}'s key set was fixed without {site}; "
                                     "it sits this round out")
            kept = self.store.put_mask_keys(round_number, site, share_public, mask_public,
                                            identity)
            if kept != (share_public, mask_public, identity):
                error = MaskPhaseError(f"{site} already advertised other keys for round "
                                       f"{round_number}")
                error.status = "ALREADY_EXISTS"
                raise error
            self.advance(current)
            self.core.notify()

    def keys(self, round_number: int) -> tuple[MaskRoundRecord, dict[str, PublicRoundKeys]]:
        """The round's sets and the keys of its key set (empty until it is fixed)."""
        record = self.store.mask_round(round_number)
        stored = self.store.mask_keys(round_number)
        chosen = record.key_set or []
        return record, {site: PublicRoundKeys(*stored[site]) for site in chosen}

    # -- shares ----------------------------------------------------------------------------
    def give_shares(self, site: str, round_number: int, sealed: dict[str, bytes]) -> None:
        """Store a key-set site's sealed share pairs, one per key-set site (first call wins)."""
        with self.core.changed:
            current = self._round(round_number, site)
            record = self.store.mask_round(round_number)
            if record.key_set is None or site not in record.key_set:
                raise MaskPhaseError(f"{site} is not in round {round_number}'s key set")
            if record.participants is not None and site not in record.participants:
                raise MaskPhaseError(f"round {round_number}'s participants were fixed without "
                                     f"{site}; it sits this round out")
            graph = self.graph(record)
            holders = sorted(graph.holders(site))
            if sorted(sealed) != holders:
                to = "the key set" if graph.is_complete else (
                    f"{site}'s holders, its neighbours in the round's graph and itself")
                raise MaskPhaseError(f"shares go to exactly {to} ({', '.join(holders)}); got "
                                     f"{', '.join(sorted(sealed)) or 'none'}")
            self.store.put_mask_shares(round_number, site, sealed)
            self.advance(current)
            self.core.notify()

    def shares_for(self, site: str, round_number: int
                   ) -> tuple[list[str] | None, dict[str, bytes]]:
        """(participants or None while open, the share pairs they sealed for `site`)."""
        record = self.store.mask_round(round_number)
        if record.participants is None:
            return None, {}
        sealed = self.store.mask_shares_for(round_number, site)
        return record.participants, {s: sealed[s] for s in record.participants if s in sealed}

    # -- phases ----------------------------------------------------------------------------
    def advance(self, current: RoundRecord) -> bool:
        """Fix the key set and the participants when their phase is over (call holding the
        round lock; the round machine calls it every step, the RPCs after each message);
        whether it fixed one (the caller then notifies)."""
        if not self.enabled or current.state != COLLECTING:
            return False
        record = self.store.mask_round(current.round)
        now = self.core.clock()
        timeout = self.config.mask_phase_timeout_s
        # A phase's deadline leaves stragglers out only while the round can still seal without
        # them: only the sites of these sets can upload, so a set smaller than the quorum
        # (min_sites) would hold the round open for good. Until then it waits for them.
        quorum = self.config.min_sites
        if record.key_set is None:
            advertised = sorted(set(self.store.mask_keys(current.round)) & set(current.expected))
            everyone = len(advertised) == len(current.expected)
            neighbours, threshold = self._graph_size(len(advertised))
            if len(advertised) >= 2 and len(advertised) >= threshold and (
                    everyone or (now >= current.opened + timeout
                                 and len(advertised) >= quorum)):
                record.key_set, record.threshold, record.key_set_fixed = (
                    advertised, threshold, now)
                record.neighbours = neighbours
                self.store.save_mask_round(record)
                log.info("round %d: key set %s, threshold %d%s", current.round,
                         ", ".join(advertised), threshold,
                         f", {neighbours} neighbours per site" if neighbours else "")
                return True
            return False
        if record.participants is None:
            shared = sorted(set(self.store.mask_share_senders(current.round)) & set(record.key_set))
            everyone = len(shared) == len(record.key_set)
            if len(shared) >= record.threshold and (
                    everyone or (now >= record.key_set_fixed + timeout
                                 and len(shared) >= quorum)):
                shared = self._recoverable(record, shared)
                if len(shared) < record.threshold:
                    return False
                record.participants = shared
                self.store.save_mask_round(record)
                current.expected = shared  # only participants can upload a masked update
                self.store.update_round(current)
                log.info("round %d: participants %s", current.round, ", ".join(shared))
                return True
        return False

    def _recoverable(self, record: MaskRoundRecord, shared: list[str]) -> list[str]:
        """`shared` less every site that has fewer than t holders of its shares in it (its
        secrets could not be rebuilt; dropping one can leave a neighbour short: repeated)."""
        graph, kept = self.graph(record), set(shared)
        while True:
            short = short_neighbourhoods(graph, record.threshold, kept, (), kept)
            if not short:
                return sorted(kept)
            log.warning("round %d: %s sit the round out: too few of their neighbours shared "
                        "keys (%s)", record.round, ", ".join(short),
                        describe_short(short, record.threshold))
            kept -= set(short)

    def short_of_survivors(self, round_number: int, uploaded: list[str]) -> str:
        """Why uploads cannot close yet with these survivors ('' if they can): a survivor's
        or dropped participant's neighbourhood that would keep fewer than t survivors."""
        record = self.store.mask_round(round_number)
        if not record.neighbours or record.participants is None:
            return ""  # the complete graph: the quorum t says it all
        survivors = set(uploaded) & set(record.participants)
        short = short_neighbourhoods(self.graph(record), record.threshold, survivors,
                                     set(record.participants) - survivors, survivors)
        return describe_short(short, record.threshold)

    def quorum(self, round_number: int) -> int:
        """Uploads a masked round needs beyond min_sites: its threshold t."""
        return self.store.mask_round(round_number).threshold

    def begin_unmasking(self, current: RoundRecord, uploaded: list[str]) -> None:
        """Uploads closed: name survivors and dropped participants, give them a deadline."""
        record = self.store.mask_round(current.round)
        assert record.participants is not None
        record.survivors = sorted(uploaded)
        record.dropped = sorted(set(record.participants) - set(uploaded))
        self.store.save_mask_round(record)
        current.deadline = self.core.clock() + self.config.mask_phase_timeout_s
        log.info("round %d: unmasking; survivors %s, dropped %s", current.round,
                 ", ".join(record.survivors), ", ".join(record.dropped) or "none")

    def answer(self, site: str, round_number: int, self_seeds: dict[str, bytes],
               mask_keys: dict[str, bytes]) -> int:
        """Store a survivor's answer (checked against the announced sets); answers so far."""
        with self.core.changed:
            self._round(round_number, site, UNMASKING)
            record = self.store.mask_round(round_number)
            assert record.survivors is not None and record.dropped is not None
            if site not in record.survivors:
                raise MaskPhaseError(f"{site} is not a survivor of round {round_number}")
            graph = self.graph(record)
            if sorted(self_seeds) != sorted(graph.holders(site) & set(record.survivors)) or \
                    sorted(mask_keys) != sorted(graph.neighbours(site) & set(record.dropped)):
                raise MaskPhaseError("an unmasking answer holds self-mask shares of exactly the "
                                     "survivors and mask-key shares of exactly the dropped "
                                     "participants whose shares the site holds (its "
                                     "neighbours and itself)")
            for share in (*self_seeds.values(), *mask_keys.values()):
                share_from_bytes(share)
            self.store.put_mask_answer(round_number, site, {
                "self_seeds": {k: v.hex() for k, v in self_seeds.items()},
                "mask_keys": {k: v.hex() for k, v in mask_keys.items()}})
            self.core.notify()
            return len(self.store.mask_answers(round_number))

    def try_unmask(self, current: RoundRecord) -> bool:
        """Rebuild and store the masks left in the sum once enough survivors answered; False
        while it waits (the deadline is extended while fewer than t answered)."""
        record = self.store.mask_round(current.round)
        if record.terms is not None:
            return True
        assert record.survivors is not None and record.dropped is not None
        answers = self.store.mask_answers(current.round)
        now = self.core.clock()
        if set(answers) != set(record.survivors) and now < current.deadline:
            return False
        short = describe_short(short_neighbourhoods(
            self.graph(record), record.threshold, record.survivors, record.dropped, answers),
            record.threshold) if record.neighbours else ""
        if len(answers) < record.threshold or short:
            current.deadline = now + self.config.mask_phase_timeout_s
            self.store.update_round(current)
            needed = (f"{len(answers)} of {record.threshold} unmasking answers needed"
                      if len(answers) < record.threshold else
                      f"too few unmasking answers from the holders of the shares of {short}")
            log.warning("round %d: %s; waiting until %s", current.round, needed,
                        time.strftime("%H:%M:%S", time.gmtime(current.deadline)))
            return False
        secrets = self._recover(record, answers)
        _, advertised = self.keys(current.round)
        terms = unmasking_terms(self.context(record), secrets, advertised, record.survivors)
        record.terms = b"".join(seed + (b"+" if sign > 0 else b"-") for seed, sign in terms)
        self.store.save_mask_round(record)
        log.info("round %d: unmasked from %d answers (%d masks left in the sum)",
                 current.round, len(answers), len(terms))
        return True

    def _recover(self, record: MaskRoundRecord, answers: dict[str, dict]) -> RecoveredSecrets:
        parsed = {site: UnmaskingAnswer(
            {k: share_from_bytes(bytes.fromhex(v)) for k, v in a["self_seeds"].items()},
            {k: share_from_bytes(bytes.fromhex(v)) for k, v in a["mask_keys"].items()})
            for site, a in answers.items()}
        _, advertised = self.keys(record.round)
        assert record.survivors is not None and record.dropped is not None
        return recover_round_secrets(self.context(record), parsed, record.survivors,
                                     record.dropped, advertised)

    def terms(self, round_number: int) -> list[tuple[bytes, int]]:
        """The masks left in a sealed round's sum, as (seed, sign)."""
        record = self.store.mask_round(round_number)
        if record.terms is None:
            raise MaskPhaseError(f"round {round_number} has no unmasking (not masked, or not "
                                 "unmasked yet)")
        step = _KEY_BYTES + 1
        return [(record.terms[i:i + _KEY_BYTES], 1 if record.terms[i + _KEY_BYTES:i + step]
                 == b"+" else -1) for i in range(0, len(record.terms), step)]
