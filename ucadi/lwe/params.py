"""Parameter sets of the ring-LWE scheme, each justified by one row of the HE security standard.

Security: the HomomorphicEncryption.org standard (Albrecht et al., 2018), Table 1, ternary
secret, error standard deviation about 3.2, 128-bit classical security: ring dimension 4096
allows log2 q <= 109 (101 for 128-bit quantum). Every set here uses N = 4096 and q = 2^56 or
2^64, far below that maximum (a smaller q is harder to attack at a fixed N), so no lattice
estimator is needed: the table row is the argument.

Exactness: decryption of a sum of K ciphertexts sees the phase sum(e_k) + Delta * sum(m_k).
Each error is centred binomial with eta = 21, so |e_k| <= 21 by construction. With
K <= max_sites the summed error is at most 21 * max_sites < Delta / 2, hence rounding the phase
to the nearest multiple of Delta recovers sum(m_k) exactly (`__post_init__` checks this bound
for every set; the sum service refuses contribution max_sites + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from ucadi.lwe.errors import ParameterError

# Centred binomial error: e = popcount(21 random bits) - popcount(21 random bits).
# Variance eta / 2 = 10.5, standard deviation 3.24: the standard's sigma ~ 3.2 (Microsoft
# SEAL samples its error the same way), and |e| <= eta is a hard bound, not a tail estimate.
ERROR_ETA = 21
HE_STANDARD_ROW_N4096 = ("HomomorphicEncryption.org security standard (2018), Table 1, "
                         "ternary secret, sigma 3.2, 128-bit classical: N = 4096, log2 q <= 109")


@dataclass(frozen=True)
class LweParameters:
    """One ring-LWE parameter set: ring, moduli, noise and the federation limits it supports."""

    set_id: int
    name: str
    ring_degree: int
    modulus_bits: int
    plaintext_bits: int
    max_sites: int
    max_site_weight: int
    max_log_q_128: int
    security_row: str

    def __post_init__(self) -> None:
        if self.modulus_bits > self.max_log_q_128:
            raise ParameterError(f"{self.name}: log2 q = {self.modulus_bits} exceeds the "
                                 f"128-bit bound {self.max_log_q_128} of {self.security_row}")
        if not 8 <= self.modulus_bits <= 64 or self.modulus_bits % 8:
            raise ParameterError(f"{self.name}: modulus bits must be a multiple of 8 in 8..64 "
                                 "(coefficients are packed as whole bytes of a uint64)")
        if self.worst_case_noise >= self.delta // 2:
            raise ParameterError(f"{self.name}: {self.max_sites} sites x error bound "
                                 f"{ERROR_ETA} = {self.worst_case_noise} is not below "
                                 f"Delta/2 = {self.delta // 2}; sums would not decrypt exactly")

    @property
    def delta_bits(self) -> int:
        """log2 of the scaling factor Delta = q / 2^P between the noise and the plaintext."""
        return self.modulus_bits - self.plaintext_bits

    @property
    def delta(self) -> int:
        """Delta = 2^(Q - P): a plaintext unit in the ciphertext."""
        return 1 << self.delta_bits

    @property
    def worst_case_noise(self) -> int:
        """Largest |sum of errors| of a sum of max_sites ciphertexts."""
        return self.max_sites * ERROR_ETA

    @property
    def plaintext_limit(self) -> int:
        """Summed plaintexts must lie in [-limit, limit - 1] (two's complement in P bits)."""
        return 1 << (self.plaintext_bits - 1)

    @property
    def coefficient_bytes(self) -> int:
        """Bytes per packed ciphertext coefficient."""
        return self.modulus_bits // 8

    @property
    def modulus_mask(self) -> int:
        """q - 1, to reduce a uint64 modulo q = 2^Q."""
        return (1 << self.modulus_bits) - 1


PARAMETER_SETS: dict[str, LweParameters] = {
    # Compact: 7 bytes per value (1.75x float32), 16 fractional bits at |x| <= 8.
    "rlwe-n4096-q56": LweParameters(
        set_id=1, name="rlwe-n4096-q56", ring_degree=4096, modulus_bits=56, plaintext_bits=40,
        max_sites=1000, max_site_weight=1000, max_log_q_128=109,
        security_row=HE_STANDARD_ROW_N4096),
    # Consortium: 6 bytes per value (1.5x float32), the same 16 fractional bits at |x| <= 8 and
    # weights up to 1,000, for federations of up to 64 sites: 64 x 21 = 1,344 < Delta/2 = 2,048
    # and 64 x 1,000 x 8 x 2^16 < 2^35. Fewer sites need fewer bits of headroom, nothing else.
    "rlwe-n4096-q48": LweParameters(
        set_id=3, name="rlwe-n4096-q48", ring_degree=4096, modulus_bits=48, plaintext_bits=36,
        max_sites=64, max_site_weight=1000, max_log_q_128=109,
        security_row=HE_STANDARD_ROW_N4096),
    # Precise: 8 bytes per value (2x float32), 20 fractional bits and weights up to 16,384.
    "rlwe-n4096-q64": LweParameters(
        set_id=2, name="rlwe-n4096-q64", ring_degree=4096, modulus_bits=64, plaintext_bits=48,
        max_sites=1000, max_site_weight=16384, max_log_q_128=109,
        security_row=HE_STANDARD_ROW_N4096),
}
DEFAULT_PARAMETER_SET = "rlwe-n4096-q56"
_BY_ID = {p.set_id: p for p in PARAMETER_SETS.values()}


def get_parameters(name_or_id: str | int = DEFAULT_PARAMETER_SET) -> LweParameters:
    """The parameter set with this name or numeric id."""
    found = _BY_ID.get(name_or_id) if isinstance(name_or_id, int) else PARAMETER_SETS.get(
        name_or_id)
    if found is None:
        raise ParameterError(f"unknown LWE parameter set {name_or_id!r}; known: "
                             + ", ".join(f"{p.name} (id {p.set_id})"
                                         for p in PARAMETER_SETS.values()))
    return found
