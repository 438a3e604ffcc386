"""The site's side of the cryptosystem: encrypt its weighted update, decrypt a global sum.

The costly ring products are made ahead, in a background thread while the site trains
(`prepare`): the next encryption's mask (a*s + e), and, when the round is known, the product
(sum of the expected sites' a) * s that decrypting the round's sum needs (ucadi.lwe.prepared).
Encrypting at upload time and decrypting the sum are then each one pass of additions. Without
prepared work both compute from scratch; the ciphertexts and results are the same either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ucadi.lwe.codec import FixedPointCodec
from ucadi.lwe.errors import CiphertextMismatchError
from ucadi.lwe.integrity import (
    SumCheck,
    SumIntegrityError,
    encode_site_update,
    update_slot_count,
)
from ucadi.lwe.keys import SecretKey
from ucadi.lwe.ledger import SeedLedger
from ucadi.lwe.prepared import (
    DecryptionProduct,
    EncryptionMask,
    prepare_mask,
    prepare_product,
    round_seed,
)
from ucadi.lwe.stream import decrypt_fedavg_file, encrypt_to_file, open_verified

T = TypeVar("T")


@dataclass(frozen=True)
class RoundContext:
    """What a site knows of a round when it starts training (from GetRound)."""

    federation: str
    round_number: int
    site: str
    expected_sites: tuple[str, ...]
    # False where the central side already holds bytes this site sent for the round: its
    # round seed may have been used, whatever the local ledger says (SiteCipher.prepare).
    round_seed_unused: bool = True


@dataclass(frozen=True)
class AnnouncedSum:
    """What the central side says a global version is: the round's sum of these sites'
    updates. A site checks it against the ciphertext before decrypting (`check`) and the
    integrity tag while decrypting (ucadi.lwe.integrity)."""

    federation: str
    round_number: int
    site: str  # the site checking
    contributors: tuple[str, ...]
    other_sites: tuple[str, ...]  # known sites not announced as contributors
    # The fewest contributors a sum may have: a sum of one site's update is that update,
    # readable by every key holder (the larger of the federation's min_sites and this site's
    # own floor), unless the one contributor is this site itself.
    min_contributors: int

    def check(self, found_round: int, seeds: Sequence[bytes], key_id: bytes) -> None:
        """Raise SumIntegrityError unless the ciphertext's round and seeds fit."""
        round_number, contributors = self.round_number, self.contributors
        if found_round != round_number:
            raise SumIntegrityError(f"the sum offered as global version {round_number} was "
                                    f"made for round {found_round}", "round")
        if len(set(contributors)) != len(contributors) or len(contributors) < \
                self.min_contributors and contributors != (self.site,):
            raise SumIntegrityError(
                f"the sum for round {round_number} is announced as made of "
                f"{len(contributors)} update(s) ({', '.join(contributors) or 'none'}); this "
                f"site accepts sums of at least {self.min_contributors} distinct sites",
                "quorum")
        if len(set(seeds)) != len(seeds) or len(seeds) != len(contributors):
            raise SumIntegrityError(
                f"the sum for round {round_number} carries {len(seeds)} ciphertext seeds "
                f"({len(set(seeds))} distinct) for {len(contributors)} announced contributors "
                f"({', '.join(contributors)}): one ciphertext per contributor is expected",
                "contributors")
        for other in self.other_sites:
            if round_seed(key_id, self.federation, round_number, other) in seeds:
                raise SumIntegrityError(
                    f"the sum for round {round_number} holds a ciphertext under {other}'s round "
                    f"seed, but {other} is not announced as a contributor", "contributors")


class SiteCipher:
    """Encrypts updates and decrypts FedAvg sums under the federation's shared secret."""

    def __init__(self, secret: SecretKey, state_dir: Path | None = None) -> None:
        """`state_dir` keeps the seed ledger; without one every encryption uses a fresh random
        seed (decryption products still help with the other sites' seeds)."""
        self.secret = secret
        self.codec = FixedPointCodec.for_parameters(secret.params)
        self.ledger = SeedLedger(state_dir) if state_dir is not None else None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lwe-prepare")
        self._mask: Future[EncryptionMask] | None = None
        self._product: Future[DecryptionProduct] | None = None

    def prepare(self, value_count: int, context: RoundContext | None = None) -> None:
        """Start making, in the background, the mask of the next encryption of `value_count`
        values (plus the weight slot) and, given the round, its sum's decryption product; the
        next `encrypt_to_file` and `decrypt_average` of that round use them."""
        slots = update_slot_count(value_count)
        own_seed = None
        if context is not None and context.round_seed_unused and self.ledger is not None \
                and self.ledger.claim(self.key_id, context.federation, context.round_number):
            own_seed = self._round_seed(context, context.site)
        self._mask = self._worker.submit(prepare_mask, self.secret, slots, own_seed)
        if context is not None and context.expected_sites:
            seeds = [self._round_seed(context, site) for site in context.expected_sites]
            self._product = self._worker.submit(prepare_product, self.secret, slots,
                                                context.round_number, seeds)

    def use_product(self, product: DecryptionProduct) -> None:
        """Decrypt the round's sum with a decryption product made elsewhere under the same
        secret (bench.sites: one per process of simulated sites); used only where it fits."""
        made: Future[DecryptionProduct] = Future()
        made.set_result(product)
        self._product = made

    def wait_prepared(self) -> None:
        """Block until the work started by `prepare` is done (benchmarks: training stand-ins)."""
        for pending in (self._mask, self._product):
            if pending is not None:
                pending.result()

    def _round_seed(self, context: RoundContext, site: str) -> bytes:
        return round_seed(self.secret.key_id, context.federation, context.round_number, site)

    @property
    def parameter_set(self) -> str:
        """Parameter-set name, as the federation announces it."""
        return self.secret.params.name

    @property
    def key_id(self) -> str:
        """Key id (hex), as the federation announces it."""
        return self.secret.key_id_hex

    def encrypt_to_file(self, vector: np.ndarray, *, weight: int, round_number: int,
                        layout_hash: str, path: Path, site: str,
                        pairwise: Callable[[np.ndarray, int], None] | None = None) -> Path:
        """Encrypt weight * vector, the weight slot and `site`'s integrity tags for the round
        (ucadi.lwe.integrity); refuses NaN/Inf/out-of-bound values. `pairwise` adds the
        round's pairwise masks (services/trainer/masking.py) before the body is written."""
        update = encode_site_update(vector, weight, self.codec, self.secret, round_number, site)
        path.parent.mkdir(parents=True, exist_ok=True)
        pending, self._mask = self._mask, None
        mask = pending.result() if pending is not None else None
        if mask is not None and mask.slot_count != update.slot_count:
            mask = None  # prepared for another model size: encrypt from scratch
        # Not fsynced: an upload file is streamed and deleted; after a crash the site trains
        # and encrypts again rather than reading it back.
        encrypt_to_file(path, self.secret, update, layout_hash=bytes.fromhex(layout_hash),
                        round_number=round_number, mask=mask, durable=False,
                        pairwise=pairwise)
        return path

    def in_background(self, work: Callable[..., T], *args: Any) -> Future[T]:
        """Run update-independent work (a round's pairwise masks) on the preparing thread."""
        return self._worker.submit(work, *args)

    def decrypt_average(self, path: Path, layout_hash: str, announced: AnnouncedSum,
                        digest_checked: bool = False,
                        unmask: Callable[[np.ndarray, int], None] | None = None) -> np.ndarray:
        """The FedAvg vector of a summed global ciphertext (float32, as the model holds it),
        after checking what the central side cannot be trusted with (`AnnouncedSum.check`,
        then the integrity tag while decrypting): SumIntegrityError if any check fails. The
        trailing digest is checked while the body is read, unless `digest_checked`: the
        download already checked it as the bytes arrived (`Downloaded.trailer_ok`).
        `unmask`: removes the masks left in a pairwise-masked sum (ucadi.lwe.masking.unmasker)."""
        opened = open_verified(path, verify_digest=False)
        header = opened.header
        found = header.layout_hash.hex()
        if found != layout_hash:
            raise CiphertextMismatchError(f"global model has layout {found[:12]}, this site "
                                          f"trains layout {layout_hash[:12]}")
        announced.check(header.round_number, opened.seeds, self.secret.key_id)
        product = None
        if self._product is not None:
            product = self._product.result()
            if product.round_number <= header.round_number:
                self._product = None  # this round's, or an older one's: never needed again
        check = SumCheck(self.secret, announced.round_number, announced.contributors)
        vector, _weight = decrypt_fedavg_file(self.secret, path, self.codec, product,
                                              verify_digest=not digest_checked, check=check,
                                              unmask=unmask)
        return vector
