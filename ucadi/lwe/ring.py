"""Exact products a * s in Z_q[x]/(x^N + 1), q = 2^Q <= 2^64, s ternary, with float64 FFTs.

Why this is exact: `a` is split into limbs of LIMB_BITS = 28 bits (two limbs for Q <= 56).
A limb polynomial times a ternary polynomial has integer coefficients of magnitude at most
N * 2^28 = 2^40 for N = 4096, and the float64 FFT round-off on such a product grows like
eps * log2(N) * |a_limb|_2 * |s|_2 <= 2^-53 * 12 * 2^34 * 2^6, about 2^-9.4 (adversarial
inputs, all-ones secret and all-maximal limbs, measured 2^-11): far below 1/2, so rounding each
coefficient gives the exact integer. The limbs are recombined with uint64 arithmetic, whose
wrap-around is reduction modulo 2^64, hence modulo any q = 2^Q dividing it.

Negacyclic trick: with y = x^(N/2) the ring is Z[x]/(y^2 + 1); a real polynomial a = lo + y*hi
maps to lo + i*hi in C[x]/(x^(N/2) - i), which the twist x = zeta*z (zeta = exp(i*pi/N)) turns
into a cyclic convolution of length N/2: one complex FFT of half the ring degree per limb.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from ucadi.lwe.blocks import ceil_div

LIMB_BITS = 28
# Largest coefficient of one limb product for which the round-off bound above holds.
MAX_EXACT_LIMB_PRODUCT = 1 << 40
_ROUNDING_MAGIC = 6755399441055744.0  # 1.5 * 2^52
_ROUNDING_MAGIC_BITS = np.float64(_ROUNDING_MAGIC).view(np.uint64)


@dataclass(frozen=True)
class SecretSpectrum:
    """The ternary secret transformed once, ready to multiply many blocks."""

    ring_degree: int
    twist: np.ndarray
    untwist: np.ndarray
    spectrum: np.ndarray


def secret_spectrum(secret: np.ndarray) -> SecretSpectrum:
    """Precompute the twisted half-length FFT of a ternary secret polynomial."""
    n = int(secret.shape[0])
    if n & (n - 1) or n < 4:
        raise ValueError(f"ring degree must be a power of two >= 4, got {n}")
    if n * (1 << LIMB_BITS) > MAX_EXACT_LIMB_PRODUCT:
        raise ValueError(f"ring degree {n} too large for exact {LIMB_BITS}-bit limb products")
    half = n // 2
    twist = np.exp(1j * np.pi * np.arange(half) / n)
    folded = secret[:half].astype(np.float64) + 1j * secret[half:].astype(np.float64)
    return SecretSpectrum(n, twist, np.conj(twist), scipy.fft.fft(folded * twist))


def multiply_by_secret(a: np.ndarray, key: SecretSpectrum, modulus_bits: int) -> np.ndarray:
    """a * s mod (x^N + 1, 2^Q) for a batch of polynomials a (uint64, shape (blocks, N))."""
    if a.ndim != 2 or a.shape[1] != key.ring_degree:
        raise ValueError(f"expected shape (blocks, {key.ring_degree}), got {a.shape}")
    blocks, half = a.shape[0], key.ring_degree // 2
    limb_count = ceil_div(modulus_bits, LIMB_BITS)
    limb_mask = np.uint64((1 << LIMB_BITS) - 1)
    # Fold each limb polynomial lo + y*hi into one complex vector (real, imag interleaved).
    folded = np.empty((limb_count, blocks, half), dtype=np.complex128)
    parts = folded.view(np.float64).reshape(limb_count, blocks, half, 2)
    low_half, high_half = a[:, :half], a[:, half:]
    for j in range(limb_count):
        shift = np.uint64(j * LIMB_BITS)
        parts[j, :, :, 0] = (low_half >> shift) & limb_mask
        parts[j, :, :, 1] = (high_half >> shift) & limb_mask
    folded *= key.twist
    product = scipy.fft.fft(folded, axis=-1, overwrite_x=True)
    product *= key.spectrum
    product = scipy.fft.ifft(product, axis=-1, overwrite_x=True)
    product *= key.untwist
    # Round to the nearest integer by adding 1.5 * 2^52: for |x| < 2^51 the low bits of the
    # sum's bit pattern are MAGIC_BITS + round(x), so rounding and conversion cost one add.
    rounded = product.view(np.float64)
    rounded += _ROUNDING_MAGIC
    exact = rounded.view(np.uint64).reshape(limb_count, blocks, half, 2)
    total = np.empty((blocks, 2, half), dtype=np.uint64)
    unfolded = total.transpose(0, 2, 1)  # real parts -> low half, imaginary -> high half
    np.copyto(unfolded, exact[0])
    offset = _ROUNDING_MAGIC_BITS
    for j in range(1, limb_count):
        shift = np.uint64(j * LIMB_BITS)
        unfolded += exact[j] << shift
        offset = offset + (_ROUNDING_MAGIC_BITS << shift)
    total -= offset
    total = total.reshape(blocks, key.ring_degree)
    if modulus_bits < 64:
        total &= np.uint64((1 << modulus_bits) - 1)
    return total


def multiply_by_secret_reference(a: np.ndarray, secret: np.ndarray,
                                 modulus_bits: int) -> np.ndarray:
    """Schoolbook negacyclic product by direct integer summation (np.convolve in int64 on
    16-bit limbs, no floating point): slow, independent of the FFT path, for tests."""
    n = len(secret)
    s = secret.astype(np.int64)
    total = [0] * n
    for j in range(4):
        limb = ((a >> np.uint64(16 * j)) & np.uint64(0xFFFF)).astype(np.int64)
        linear = np.convolve(limb, s)  # |coefficient| <= n * 2^16: exact in int64
        folded = linear[:n].copy()
        folded[:n - 1] -= linear[n:]  # x^n = -1
        total = [t + (int(v) << (16 * j)) for t, v in zip(total, folded, strict=True)]
    modulus = 1 << modulus_bits
    return np.array([t % modulus for t in total], dtype=np.uint64)
