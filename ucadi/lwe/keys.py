"""The shared LWE secret key: a ternary polynomial, its key id and its parameter set."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ucadi.lwe.errors import CiphertextFormatError
from ucadi.lwe.params import DEFAULT_PARAMETER_SET, LweParameters, get_parameters
from ucadi.lwe.ring import SecretSpectrum, secret_spectrum
from ucadi.lwe.sampling import sample_ternary

KEY_ID_BYTES = 16
_SECRET_MAGIC = b"UCSK"
_SECRET_VERSION = 1
_SECRET_HEADER = struct.Struct("<4sBH16s")


@dataclass(frozen=True, eq=False)
class SecretKey:
    """The LWE secret s (ternary, int8) shared by the sites; only ever stored wrapped centrally."""

    key_id: bytes
    params: LweParameters
    coefficients: np.ndarray = field(repr=False)

    @property
    def key_id_hex(self) -> str:
        """The key id as 32 hex characters (how people and logs name a key)."""
        return self.key_id.hex()

    @cached_property
    def spectrum(self) -> SecretSpectrum:
        """The secret ready for fast ring multiplication."""
        return secret_spectrum(self.coefficients)

    def to_bytes(self) -> bytes:
        """Serialize: header (magic, version, parameter set, key id) + 2 bits per coefficient."""
        digits = (self.coefficients.astype(np.int16) + 1).astype(np.uint8).reshape(-1, 4)
        packed = digits[:, 0] | digits[:, 1] << 2 | digits[:, 2] << 4 | digits[:, 3] << 6
        return _SECRET_HEADER.pack(_SECRET_MAGIC, _SECRET_VERSION, self.params.set_id,
                                   self.key_id) + packed.astype(np.uint8).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> SecretKey:
        """Parse `to_bytes` output; raises CiphertextFormatError on anything else."""
        if len(data) < _SECRET_HEADER.size:
            raise CiphertextFormatError("LWE secret key file is truncated")
        magic, version, set_id, key_id = _SECRET_HEADER.unpack_from(data)
        if magic != _SECRET_MAGIC or version != _SECRET_VERSION:
            raise CiphertextFormatError(
                f"not a UCADI LWE secret key (magic {magic!r}, version {version}); "
                f"expected {_SECRET_MAGIC!r} version {_SECRET_VERSION}")
        params = get_parameters(set_id)
        packed = np.frombuffer(data, dtype=np.uint8, offset=_SECRET_HEADER.size)
        if packed.size * 4 != params.ring_degree:
            raise CiphertextFormatError(f"LWE secret key has {packed.size * 4} coefficients; "
                                        f"{params.name} needs {params.ring_degree}")
        digits = np.stack([(packed >> shift) & 3 for shift in (0, 2, 4, 6)], axis=1).reshape(-1)
        if (digits > 2).any():
            raise CiphertextFormatError("LWE secret key has a coefficient outside {-1, 0, 1}")
        return cls(key_id, params, digits.astype(np.int8) - 1)

    def save(self, path: Path) -> None:
        """Write the secret to a file readable by its owner only."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(self.to_bytes())

    @classmethod
    def load(cls, path: Path) -> SecretKey:
        """Read a secret written by `save`."""
        return cls.from_bytes(Path(path).read_bytes())


def generate_secret_key(parameter_set: str | int = DEFAULT_PARAMETER_SET) -> SecretKey:
    """A new secret with a random 16-byte key id, both from the OS CSPRNG."""
    params = get_parameters(parameter_set)
    return SecretKey(os.urandom(KEY_ID_BYTES), params, sample_ternary(params.ring_degree))
