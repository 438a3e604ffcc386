"""A site's side of pairwise masks (ucadi.lwe.masking; docs/design/multiparty.md): before it
uploads, it advertises its round keys and shares its secrets with its neighbours in the
round's graph (every other site, or k of them: ucadi/lwe/neighbours.py; relayed, sealed, by
the aggregator); it masks its ciphertext; while the round is UNMASKING
it answers once; before it decrypts a global version it removes the masks left in the sum.

Round keys go out with the site's custodian-certified identity, and the key set that comes
back is checked against the custodian's key, and the share pairs received are all opened,
before the site masks anything (ucadi.lwe.masking, "Round keys are authenticated"): a key set
the central side altered makes the site sit the round out, logged.

What a round needs after a restart is in `<work dir>/masking/round-NNNNN.json` (mode 0600,
written durably before anything derived from it is sent): the round's private keys and
self-mask seed (so a restarted site advertises the same keys, and its shares stay valid),
the sealed share pairs it received and the sets it answered for (the honest rule: never a
second answer with other sets). A round's file is deleted once its sum is decrypted.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from services.trainer.client import FederationRejected
from ucadi.durable import write_durably
from ucadi.errors import UcadiError
from ucadi.lwe.custodian import SiteIdentity
from ucadi.lwe.masking import (
    MaskingError,
    MaskingRound,
    PublicRoundKeys,
    RoundKeys,
    SitePairing,
    answer_unmasking,
    apply_mask_terms,
    generate_round_keys,
)
from ucadi.lwe.params import LweParameters
from ucadi.lwe.shamir import share_to_bytes
from ucadi.ops import faults

log = logging.getLogger(__name__)
PHASE_WAIT_S = 10.0


@dataclass(frozen=True)
class MaskedRound:
    """What a participant masks with: its pairing and the round's participants."""

    pairing: SitePairing
    participants: tuple[str, ...]

    def total(self, slot_count: int, params: LweParameters) -> np.ndarray:
        """This site's whole mask over `slot_count` coefficients (mod q): it does not depend
        on the update, so it is made while the site trains."""
        total = np.zeros(slot_count, dtype=np.uint64)
        apply_mask_terms(total, 0, self.pairing.mask_terms(self.participants), params)
        return total

    def masker(self, params: LweParameters, total: np.ndarray | None = None
               ) -> Callable[[np.ndarray, int], None]:
        """Adds this site's masks to a batch of b coefficients starting at a slot: one
        addition from `total` (made ahead), or expanded here."""
        if total is None:
            terms = self.pairing.mask_terms(self.participants)
            return lambda batch, first: apply_mask_terms(batch, first, terms, params)
        reduce = np.uint64(params.modulus_mask)

        def add(batch: np.ndarray, first: int) -> None:
            batch += total[first:first + batch.size]
            batch &= reduce
        return add


@dataclass(frozen=True)
class SiteCredentials:
    """What authenticates a site's round keys: its long-term X25519 key, the custodian's
    certificate of it, and the custodian's public key (to check the other sites')."""

    identity_key: X25519PrivateKey
    identity: SiteIdentity
    custodian: Ed25519PublicKey


class SiteMasks:
    """The masking steps of one site, with their durable state."""

    def __init__(self, folder: Path, site: str, federation: str, key_id: bytes,
                 credentials: SiteCredentials) -> None:
        self.folder = Path(folder)
        self.site = site
        self.federation = federation
        self.key_id = key_id
        self.credentials = credentials

    def _path(self, round_number: int) -> Path:
        return self.folder / f"round-{round_number:05d}.json"

    def _load(self, round_number: int) -> dict[str, Any] | None:
        path = self._path(round_number)
        return json.loads(path.read_text()) if path.exists() else None

    def _save(self, round_number: int, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(round_number)
        write_durably(path, json.dumps(state, sort_keys=True).encode())
        os.chmod(path, 0o600)

    def forget(self, round_number: int) -> None:
        """Delete a round's state (its sum was decrypted: nothing more to answer)."""
        self._path(round_number).unlink(missing_ok=True)

    def _context(self, state: dict[str, Any], round_number: int) -> MaskingRound:
        return MaskingRound(self.federation, self.key_id, round_number,
                            tuple(state["key_set"]), state["threshold"],
                            state.get("neighbours", 0))

    def _pairing(self, state: dict[str, Any], round_number: int) -> SitePairing:
        keys = RoundKeys.from_bytes(bytes.fromhex(state["keys"]))
        advertised = {site: PublicRoundKeys(*(bytes.fromhex(part) for part in parts))
                      for site, parts in state["advertised"].items()}
        return SitePairing(self._context(state, round_number), self.site, keys, advertised,
                           self.credentials.identity_key, self.credentials.custodian)

    def join_round(self, client: Any, round_number: int,
                   still_open: Callable[[], bool]) -> MaskedRound | None:
        """Keys, then shares; the masking of this round, or None when the round went on
        without this site (it then sits the round out)."""
        try:
            return self._join_round(client, round_number, still_open)
        except FederationRejected as exc:  # the phase closed without this site, or the round
            log.warning("%s: round %d's masking went on without this site: %s", self.site,
                        round_number, exc)
            return None
        except MaskingError as exc:  # keys or shares not what their sites sent
            log.error("%s: sitting round %d out: %s", self.site, round_number, exc)
            return None

    def _join_round(self, client: Any, round_number: int,
                    still_open: Callable[[], bool]) -> MaskedRound | None:
        state = self._load(round_number)
        if state is None:
            state = {"keys": generate_round_keys().to_bytes().hex()}
            self._save(round_number, state)  # before advertising: a restart reuses the keys
        keys = RoundKeys.from_bytes(bytes.fromhex(state["keys"]))
        public = keys.public(self.credentials.identity)
        if "key_set" not in state:
            reply = self._until_complete(lambda: client.exchange_mask_keys(
                round_number, public, PHASE_WAIT_S), still_open)
            if reply is None:
                return None
            state["key_set"] = [k.site for k in reply.keys]
            state["threshold"] = reply.threshold
            # k, as the aggregator fixed it for every site (a reply without it: complete).
            state["neighbours"] = getattr(reply, "neighbours", 0)
            state["advertised"] = {k.site: [k.share_public.hex(), k.mask_public.hex(),
                                            k.identity.hex()] for k in reply.keys}
            self._save(round_number, state)
            faults.crash_point("after_mask_keys_before_shares")
        if self.site not in state["key_set"]:
            return None
        pairing = self._pairing(state, round_number)
        if "participants" not in state:
            sealed = pairing.share_messages()
            reply = self._until_complete(lambda: client.exchange_mask_shares(
                round_number, sealed, PHASE_WAIT_S), still_open)
            if reply is None:
                return None
            state["participants"] = list(reply.participants)
            state["received"] = {s.site: bytes(s.sealed).hex() for s in reply.shares}
            self._save(round_number, state)
        if self.site not in state["participants"]:
            return None
        pairing.open_all(self._received(state))  # every sender saw the key set we saw
        return MaskedRound(pairing, tuple(state["participants"]))

    @staticmethod
    def _received(state: dict[str, Any]) -> dict[str, bytes]:
        return {sender: bytes.fromhex(blob) for sender, blob in state["received"].items()}

    def prepare(self, client: Any, round_number: int, still_open: Callable[[], bool],
                slot_count: int, params: LweParameters
                ) -> tuple[MaskedRound, np.ndarray] | None:
        """`join_round`, then this site's whole mask over `slot_count` coefficients: all a
        round's masking a site can do before its update exists (run while it trains)."""
        masked = self.join_round(client, round_number, still_open)
        return None if masked is None else (masked, masked.total(slot_count, params))

    @staticmethod
    def _until_complete(call: Callable[[], Any], still_open: Callable[[], bool]) -> Any:
        while True:
            reply = call()
            if reply.complete:
                return reply
            if not still_open():
                return None

    def answer(self, client: Any, round_number: int, survivors: list[str],
               dropped: list[str]) -> bool:
        """Send this survivor's unmasking answer (the honest rule, recorded durably first);
        False when this site holds no shares for the round (it did not take part)."""
        state = self._load(round_number)
        if state is None or "received" not in state:
            return False
        context = self._context(state, round_number)
        pairing = self._pairing(state, round_number)
        try:
            received = pairing.open_all(self._received(state))
        except MaskingError as exc:
            log.error("%s: refusing to unmask round %d: %s", self.site, round_number, exc)
            return False
        before = state.get("answered")
        answered_before = ((frozenset(before[0]), frozenset(before[1]))
                           if before is not None else None)
        try:
            answer = answer_unmasking(context, self.site, received, survivors, dropped,
                                      answered_before, pairing.graph)
        except UcadiError as exc:
            log.error("%s: refusing to unmask round %d: %s", self.site, round_number, exc)
            return False
        if before is None:
            state["answered"] = [sorted(survivors), sorted(dropped)]
            self._save(round_number, state)
        try:
            client.send_unmasking(round_number,
                                  {o: share_to_bytes(v) for o, v in answer.self_seeds.items()},
                                  {o: share_to_bytes(v) for o, v in answer.mask_keys.items()})
        except FederationRejected as exc:  # the round was unmasked without this answer
            log.warning("%s: round %d's unmasking answer was not taken: %s", self.site,
                        round_number, exc)
            return False
        return True
