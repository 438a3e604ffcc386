"""Fixed-point codec and encrypted weighted FedAvg.

A site with integer weight w (training samples x local epochs) encodes each value x as
round(w * x * 2^f) and appends w itself as one extra slot. The sum of all sites' slots is
(sum_k w_k x_k scaled by 2^f, sum_k w_k); their quotient is the FedAvg model. Each encoded
value is off by at most 1/2 from w x 2^f, so the decoded average is within
sum_k (1/2) / (2^f sum_k w_k) <= 2^-(f+1) of the exact weighted mean (w_k >= 1).

Capacity: |encoded| <= w * bound * 2^f, so a sum over max_sites sites of weight at most
max_site_weight stays inside the P-bit plaintext when
max_sites * max_site_weight * bound * 2^f < 2^(P-1); `check_capacity` enforces it, which makes
overflow impossible for any input the codec accepts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ucadi.lwe.blocks import ceil_div
from ucadi.lwe.errors import EncodingError
from ucadi.lwe.params import LweParameters

# Default codec per parameter set: (fractional bits, bound on |x|).
DEFAULT_CODECS = {"rlwe-n4096-q56": (16, 8.0), "rlwe-n4096-q48": (16, 8.0),
                  "rlwe-n4096-q64": (20, 8.0)}
_VALIDATION_BLOCK = 1 << 20


@dataclass(frozen=True)
class FixedPointCodec:
    """Values in [-bound, bound] as integers with `frac_bits` fractional bits."""

    frac_bits: int
    bound: float

    def __post_init__(self) -> None:
        if not 0 <= self.frac_bits <= 40:
            raise EncodingError(f"frac_bits must be in 0..40, got {self.frac_bits}")
        if not (np.isfinite(self.bound) and self.bound > 0):
            raise EncodingError(f"bound must be a positive finite number, got {self.bound}")

    @classmethod
    def for_parameters(cls, params: LweParameters) -> FixedPointCodec:
        """The default codec of a parameter set (checked against its capacity)."""
        frac_bits, bound = DEFAULT_CODECS[params.name]
        codec = cls(frac_bits, bound)
        codec.check_capacity(params)
        return codec

    @property
    def resolution(self) -> float:
        """Worst-case absolute error of a decoded (averaged) value: 2^-(f+1)."""
        return 2.0 ** -(self.frac_bits + 1)

    def max_encoded(self, weight: int) -> int:
        """Largest |encoded value| a site of this weight can produce."""
        return int(np.floor(weight * self.bound * 2.0 ** self.frac_bits))

    def check_capacity(self, params: LweParameters) -> None:
        """Raise unless a full federation's sum of encodings fits the plaintext space."""
        worst = params.max_sites * self.max_encoded(params.max_site_weight)
        if worst >= params.plaintext_limit:
            raise EncodingError(
                f"codec (f={self.frac_bits}, bound={self.bound}) can overflow {params.name}: "
                f"{params.max_sites} sites x weight {params.max_site_weight} reach {worst}, "
                f"limit {params.plaintext_limit - 1}; lower frac_bits or bound")

    def check_weight(self, weight: int, params: LweParameters) -> None:
        """Raise unless weight is an integer in 1..max_site_weight."""
        if isinstance(weight, bool) or not isinstance(weight, (int, np.integer)) or not (
                1 <= weight <= params.max_site_weight):
            raise EncodingError(f"FedAvg weight must be an integer in 1..{params.max_site_weight} "
                                f"for {params.name} (samples x local epochs), got {weight!r}")

    def validate(self, values: np.ndarray) -> None:
        """Raise EncodingError on NaN, Inf or |x| > bound, naming the first bad index."""
        if values.ndim != 1:
            raise EncodingError(f"expected a flat vector of values, got shape {values.shape}")
        for start in range(0, values.size, _VALIDATION_BLOCK):
            part = values[start:start + _VALIDATION_BLOCK]
            if part.max() <= self.bound and part.min() >= -self.bound:
                continue  # two reductions, no temporaries (a NaN makes max() NaN: not <= bound)
            # Comparisons, not np.abs: abs(INT64_MIN) overflows to a negative number.
            bad = ~np.isfinite(part) | (part > self.bound) | (part < -self.bound)
            if bad.any():
                index = start + int(np.argmax(bad))
                raise EncodingError(
                    f"value {values[index]!r} at index {index} cannot be encrypted: values must "
                    f"be finite with |x| <= {self.bound} (nothing was sent)")

    def encode_values(self, values: np.ndarray, weight: int) -> np.ndarray:
        """round(weight * x * 2^f) as int64 (values already validated)."""
        scaled = np.asarray(values, dtype=np.float64) * (float(weight) * 2.0 ** self.frac_bits)
        return np.rint(scaled).astype(np.int64)

    def decode_sums(self, value_slots: np.ndarray) -> np.ndarray:
        """Summed value slots -> sum_k w_k x_k as float64."""
        return value_slots.astype(np.float64) * 2.0 ** -self.frac_bits


@dataclass(frozen=True)
class EncodedUpdate:
    """A site's validated, weighted model vector, encoded lazily slot range by slot range.

    Slots 0..n-1 carry round(w x 2^f); slot n carries w.
    """

    values: np.ndarray
    weight: int
    codec: FixedPointCodec

    @property
    def frac_bits(self) -> int:
        """Fractional bits of the encoding (travels in the ciphertext header)."""
        return self.codec.frac_bits

    @property
    def slot_count(self) -> int:
        """Number of plaintext slots: one per value plus the weight slot."""
        return self.values.size + 1

    def slots(self, start: int, stop: int) -> np.ndarray:
        """Encoded slots [start, stop) as int64."""
        value_stop = min(stop, self.values.size)
        encoded = self.codec.encode_values(self.values[start:value_stop], self.weight) if (
            start < value_stop) else np.empty(0, dtype=np.int64)
        if stop > self.values.size:
            encoded = np.append(encoded, np.int64(self.weight))
        return encoded


def encode_update(values: np.ndarray, weight: int, codec: FixedPointCodec,
                  params: LweParameters) -> EncodedUpdate:
    """Validate a site's flat vector and weight; refuse anything that could not be summed."""
    codec.check_capacity(params)
    codec.check_weight(weight, params)
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating) and not np.issubdtype(
            values.dtype, np.integer):
        raise EncodingError(f"values must be a numeric vector, got dtype {values.dtype}")
    codec.validate(values)
    return EncodedUpdate(values, int(weight), codec)


def split_weight(slots: np.ndarray, codec: FixedPointCodec) -> tuple[np.ndarray, int]:
    """Decrypted summed slots -> (sum_k w_k x_k as float64, sum_k w_k)."""
    total_weight = int(slots[-1])
    if total_weight < 1:
        raise EncodingError(f"decrypted total weight is {total_weight}; expected >= 1 "
                            "(was the sum made of valid contributions?)")
    return codec.decode_sums(slots[:-1]), total_weight


def weight_unit(max_site_samples: int, max_site_weight: int) -> int:
    """Training samples per unit of FedAvg weight, so that the federation's largest site
    (cases x local epochs) still fits the parameter set's integer weight: 1 while it does."""
    return max(1, ceil_div(int(max_site_samples), int(max_site_weight)))


def site_weight(samples: int, unit: int) -> int:
    """A site's integer FedAvg weight: its samples (cases x local epochs) in whole units,
    at least 1. With unit 1 this is exact; with a larger unit a site's share is off by at most
    half a unit (docs/security.md)."""
    return max(1, (int(samples) + int(unit) // 2) // int(unit))


def average_scale(codec: FixedPointCodec, total_weight: int) -> float:
    """Factor from a summed value slot to its FedAvg value: 2^-f / sum_k w_k."""
    return 2.0 ** -codec.frac_bits / total_weight


def decode_average_into(slots: np.ndarray, scale: float, out: np.ndarray) -> None:
    """out[:] = slots * scale as float32: how every site turns a decrypted sum into the model."""
    np.multiply(slots, scale, out=out, casting="unsafe")


def plaintext_fedavg(vectors: list[np.ndarray], weights: list[int], codec: FixedPointCodec,
                     params: LweParameters) -> np.ndarray:
    """The float32 FedAvg that decrypting the sites' summed ciphertexts gives, bit for bit,
    computed without encryption (the decryption is exact: it yields the integer sum of the
    encodings). For simulations of the encrypted federation."""
    updates = [encode_update(v, w, codec, params) for v, w in zip(vectors, weights, strict=True)]
    count = updates[0].slot_count
    total = np.zeros(count, dtype=np.int64)
    for update in updates:
        total += update.slots(0, count)
    out = np.empty(count - 1, dtype=np.float32)
    decode_average_into(total[:-1], average_scale(codec, int(total[-1])), out)
    return out


def fedavg(slots: np.ndarray, codec: FixedPointCodec) -> np.ndarray:
    """The FedAvg vector (float64) from decrypted summed slots."""
    sums, total_weight = split_weight(slots, codec)
    return sums / total_weight
