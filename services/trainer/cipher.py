"""The site's side of the cryptosystem: encrypt its weighted update, decrypt a global sum.

Encryption is split: `prepare(value_count)` makes the next encryption's mask (a*s + e, the
costly part, message-independent) in a background thread while the site trains, and
`encrypt_to_file` then adds the encoded update to it. Without a prepared mask it encrypts
from scratch; the ciphertext is the same either way.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ucadi.lwe.codec import FixedPointCodec, encode_update
from ucadi.lwe.errors import CiphertextMismatchError
from ucadi.lwe.keys import SecretKey
from ucadi.lwe.scheme import EncryptionMask, prepare_mask
from ucadi.lwe.stream import decrypt_fedavg_file, encrypt_to_file, open_verified


class SiteCipher:
    """Encrypts updates and decrypts FedAvg sums under the federation's shared secret."""

    def __init__(self, secret: SecretKey) -> None:
        self.secret = secret
        self.codec = FixedPointCodec.for_parameters(secret.params)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lwe-mask")
        self._mask: Future[EncryptionMask] | None = None

    def prepare(self, value_count: int) -> None:
        """Start making the mask of the next encryption of `value_count` values (plus the
        weight slot) in the background; the next `encrypt_to_file` of that size uses it."""
        self._mask = self._worker.submit(prepare_mask, self.secret, value_count + 1)

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
        encrypt_to_file(path, self.secret, update, layout_hash=bytes.fromhex(layout_hash),
                        round_number=round_number, mask=mask)
        return path

    def decrypt_average(self, path: Path, layout_hash: str) -> np.ndarray:
        """The FedAvg vector of a summed global ciphertext (float32, as the model holds it)."""
        # The digest is checked while decrypting reads the body (iter_verified_batches).
        found = open_verified(path, verify_digest=False).header.layout_hash.hex()
        if found != layout_hash:
            raise CiphertextMismatchError(f"global model has layout {found[:12]}, this site "
                                          f"trains layout {layout_hash[:12]}")
        vector, _weight = decrypt_fedavg_file(self.secret, path, self.codec)
        return vector
