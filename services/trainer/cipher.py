"""The site's side of the cryptosystem: encrypt its weighted update, decrypt a global sum.

The costly ring products are made ahead, in a background thread while the site trains
(`prepare`): the next encryption's mask (a*s + e), and, when the round is known, the product
(sum of the expected sites' a) * s that decrypting the round's sum needs (ucadi.lwe.prepared).
Encrypting at upload time and decrypting the sum are then each one pass of additions. Without
prepared work both compute from scratch; the ciphertexts and results are the same either way.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ucadi.durable import write_durably
from ucadi.lwe.codec import FixedPointCodec, encode_update
from ucadi.lwe.errors import CiphertextMismatchError
from ucadi.lwe.keys import SecretKey
from ucadi.lwe.prepared import (
    DecryptionProduct,
    EncryptionMask,
    prepare_mask,
    prepare_product,
    round_seed,
)
from ucadi.lwe.stream import decrypt_fedavg_file, encrypt_to_file, open_verified


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


class SeedLedger:
    """Per key and federation, the last round whose derived seed this site has used: a round
    seed may encrypt once (prepared.round_seed), and this file, written durably before the
    mask is made, is what guarantees it across restarts."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / "round-seeds-used.json"

    def claim(self, key_id: str, federation: str, round_number: int) -> bool:
        """Record the round's derived seed as used; False if it already was (or a later one)."""
        used = json.loads(self.path.read_text()) if self.path.exists() else {}
        entry = f"{key_id}/{federation}"
        if used.get(entry, 0) >= round_number:
            return False
        used[entry] = round_number
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(self.path, json.dumps(used).encode())
        return True


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
        slots = value_count + 1
        own_seed = None
        if context is not None and context.round_seed_unused and self.ledger is not None \
                and self.ledger.claim(self.key_id, context.federation, context.round_number):
            own_seed = self._round_seed(context, context.site)
        self._mask = self._worker.submit(prepare_mask, self.secret, slots, own_seed)
        if context is not None and context.expected_sites:
            seeds = [self._round_seed(context, site) for site in context.expected_sites]
            self._product = self._worker.submit(prepare_product, self.secret, slots,
                                                context.round_number, seeds)

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
                        layout_hash: str, path: Path) -> Path:
        """Encrypt weight * vector (+ the weight slot); refuses NaN/Inf/out-of-bound values."""
        update = encode_update(vector, weight, self.codec, self.secret.params)
        path.parent.mkdir(parents=True, exist_ok=True)
        pending, self._mask = self._mask, None
        mask = pending.result() if pending is not None else None
        if mask is not None and mask.slot_count != update.slot_count:
            mask = None  # prepared for another model size: encrypt from scratch
        # Not fsynced: an upload file is streamed and deleted; after a crash the site trains
        # and encrypts again rather than reading it back.
        encrypt_to_file(path, self.secret, update, layout_hash=bytes.fromhex(layout_hash),
                        round_number=round_number, mask=mask, durable=False)
        return path

    def decrypt_average(self, path: Path, layout_hash: str,
                        digest_checked: bool = False) -> np.ndarray:
        """The FedAvg vector of a summed global ciphertext (float32, as the model holds it).
        Its trailing digest is checked while the body is read, unless `digest_checked`: the
        download already checked it as the bytes arrived (`Downloaded.trailer_ok`)."""
        header = open_verified(path, verify_digest=False).header
        found = header.layout_hash.hex()
        if found != layout_hash:
            raise CiphertextMismatchError(f"global model has layout {found[:12]}, this site "
                                          f"trains layout {layout_hash[:12]}")
        product = None
        if self._product is not None:
            product = self._product.result()
            if product.round_number <= header.round_number:
                self._product = None  # this round's, or an older one's: never needed again
        vector, _weight = decrypt_fedavg_file(self.secret, path, self.codec, product,
                                              verify_digest=not digest_checked)
        return vector
