"""The site's side of the cryptosystem: encrypt its weighted update, decrypt a global sum."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ucadi.lwe.codec import FixedPointCodec, encode_update
from ucadi.lwe.errors import CiphertextMismatchError
from ucadi.lwe.keys import SecretKey
from ucadi.lwe.stream import decrypt_fedavg_file, encrypt_to_file, open_verified


class SiteCipher:
    """Encrypts updates and decrypts FedAvg sums under the federation's shared secret."""

    def __init__(self, secret: SecretKey) -> None:
        self.secret = secret
        self.codec = FixedPointCodec.for_parameters(secret.params)

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
        encrypt_to_file(path, self.secret, update, layout_hash=bytes.fromhex(layout_hash),
                        round_number=round_number)
        return path

    def decrypt_average(self, path: Path, layout_hash: str) -> np.ndarray:
        """The FedAvg vector of a summed global ciphertext (float64)."""
        found = open_verified(path).header.layout_hash.hex()
        if found != layout_hash:
            raise CiphertextMismatchError(f"global model has layout {found[:12]}, this site "
                                          f"trains layout {layout_hash[:12]}")
        vector, _weight = decrypt_fedavg_file(self.secret, path, self.codec)
        return vector.astype(np.float64)
