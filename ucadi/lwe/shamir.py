"""Shamir t-of-n secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

A secret is the constant term of a random polynomial of degree t - 1; holder x (1..n) gets
its value at x. Any t shares give the secret by Lagrange interpolation at 0; t - 1 shares are
consistent with every secret equally (information-theoretic), which is what lets a site hand
its round's mask key and self-mask seed to the others (docs/design/multiparty.md). The
Mersenne prime 2^521 - 1 holds any 256-bit secret; a share is 66 bytes.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from ucadi.lwe.errors import LweError

FIELD_PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # ceil(521 / 8)
SECRET_BYTES = 32


class SharingError(LweError):
    """Shares that cannot give a secret: too few, inconsistent, or out of range."""

    status = "FAILED_PRECONDITION"


def split_secret(secret: bytes, threshold: int, holders: Sequence[int]) -> dict[int, int]:
    """Shares of a 32-byte `secret` for holders at the given non-zero x coordinates, any
    `threshold` of which recover it (coefficients from the OS CSPRNG)."""
    if len(secret) != SECRET_BYTES:
        raise SharingError(f"a shared secret is {SECRET_BYTES} bytes, got {len(secret)}")
    xs = list(holders)
    if len(set(xs)) != len(xs) or not all(0 < x < FIELD_PRIME for x in xs):
        raise SharingError("share holders need distinct non-zero x coordinates")
    if not 1 <= threshold <= len(xs):
        raise SharingError(f"threshold {threshold} must be in 1..{len(xs)} (the holders)")
    coefficients = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(FIELD_PRIME) for _ in range(threshold - 1)]
    return {x: _evaluate(coefficients, x) for x in xs}


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    value = 0
    for coefficient in reversed(coefficients):
        value = (value * x + coefficient) % FIELD_PRIME
    return value


def _interpolate_at(points: Sequence[tuple[int, int]], at: int) -> int:
    total = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * (at - xj) % FIELD_PRIME
                denominator = denominator * (xi - xj) % FIELD_PRIME
        total = (total + yi * numerator * pow(denominator, -1, FIELD_PRIME)) % FIELD_PRIME
    return total


def recover_secret(shares: Mapping[int, int], threshold: int) -> bytes:
    """The 32-byte secret from at least `threshold` shares; every share beyond the first
    `threshold` must lie on the same polynomial (a substituted share is caught, not used)."""
    points = sorted(shares.items())
    if len(points) < threshold:
        raise SharingError(f"{len(points)} shares cannot recover a secret shared {threshold} "
                           f"of n; at least {threshold} are needed")
    if any(not 0 < x < FIELD_PRIME or not 0 <= y < FIELD_PRIME for x, y in points):
        raise SharingError("a share lies outside the field")
    basis = points[:threshold]
    for x, y in points[threshold:]:
        if _interpolate_at(basis, x) != y:
            raise SharingError(f"share {x} does not lie on the polynomial of the others: "
                               "a share was altered")
    value = _interpolate_at(basis, 0)
    if value >= 1 << (8 * SECRET_BYTES):
        raise SharingError("the shares do not encode a 32-byte secret (altered shares)")
    return value.to_bytes(SECRET_BYTES, "big")


def share_to_bytes(share: int) -> bytes:
    """A share value as SHARE_BYTES big-endian bytes."""
    return share.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    """Inverse of share_to_bytes; SharingError unless it is a field element."""
    if len(data) != SHARE_BYTES:
        raise SharingError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    value = int.from_bytes(data, "big")
    if value >= FIELD_PRIME:
        raise SharingError("share value outside the field")
    return value
