"""Parameter sets of the ring-LWE scheme, each justified by one row of the HE security standard.

Security: the HomomorphicEncryption.org standard (Albrecht et al., 2018), Table 1, ternary
secret, error standard deviation about 3.2, 128-bit classical security: ring dimension 4096
allows log2 q <= 109 (101 for 128-bit quantum). Every set here uses N = 4096 and q = 2^56 or
2^64, far below that maximum (a smaller q is harder to attack at a fixed N), so no lattice
estimator is needed: the table row is the argument.

Size: a coefficient's lowest bits hold only noise, so a ciphertext is sent with them rounded
away. A site's contribution drops `contribution_drop_bits` (rounding moves each coefficient by at
most 2^(u-1)), a sealed sum drops `sum_drop_bits` (at most 2^(d-1) more). Rounding is a public
function of the ciphertext, so it costs no security; it only adds bounded noise.

Exactness: decryption of a sum of K contributions sees the phase
sum(e_k + r_k) + R + Delta * sum(m_k), with |e_k| <= eta = 21 (centred binomial, a bound by
construction), |r_k| <= 2^(u-1) (each contribution's rounding) and |R| <= 2^(d-1) (the sum's).
With K <= max_sites that is at most max_sites * (21 + 2^(u-1)) + 2^(d-1) < Delta / 2, hence
rounding the phase to the nearest multiple of Delta recovers sum(m_k) exactly (`__post_init__`
checks this bound for every set; the sum service refuses contribution max_sites + 1).
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
    contribution_drop_bits: int
    sum_drop_bits: int

    def __post_init__(self) -> None:
        if self.modulus_bits > self.max_log_q_128:
            raise ParameterError(f"{self.name}: log2 q = {self.modulus_bits} exceeds the "
                                 f"128-bit bound {self.max_log_q_128} of {self.security_row}")
        if not 8 <= self.modulus_bits <= 64 or self.modulus_bits % 8:
            raise ParameterError(f"{self.name}: modulus bits must be a multiple of 8 in 8..64 "
                                 "(coefficients are packed as whole bytes of a uint64)")
        for bits in (self.contribution_bits, self.sum_bits):
            if not 33 <= bits <= self.modulus_bits or bits % 4:
                raise ParameterError(f"{self.name}: {bits}-bit coefficients are not packable "
                                     "(a multiple of 4 bits in 33..Q)")
        if self.worst_case_noise >= self.delta // 2:
            raise ParameterError(
                f"{self.name}: {self.max_sites} sites x (error bound {ERROR_ETA} + rounding "
                f"{_half(self.contribution_drop_bits)}) + the sum's rounding "
                f"{_half(self.sum_drop_bits)} = {self.worst_case_noise} is not below "
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
        """Largest |noise| in a sealed sum of max_sites contributions: their errors and
        roundings, and the sum's rounding."""
        return (self.max_sites * (ERROR_ETA + _half(self.contribution_drop_bits))
                + _half(self.sum_drop_bits))

    @property
    def contribution_bits(self) -> int:
        """Bits per coefficient of a site's ciphertext as sent and stored."""
        return self.modulus_bits - self.contribution_drop_bits

    @property
    def sum_bits(self) -> int:
        """Bits per coefficient of a sealed sum (a global model) as sent and stored."""
        return self.modulus_bits - self.sum_drop_bits

    @property
    def plaintext_limit(self) -> int:
        """Summed plaintexts must lie in [-limit, limit - 1] (two's complement in P bits)."""
        return 1 << (self.plaintext_bits - 1)

    @property
    def modulus_mask(self) -> int:
        """q - 1, to reduce a uint64 modulo q = 2^Q."""
        return (1 << self.modulus_bits) - 1


def _half(dropped_bits: int) -> int:
    """Largest change rounding away `dropped_bits` low bits makes to a coefficient."""
    return 1 << (dropped_bits - 1) if dropped_bits else 0


PARAMETER_SETS: dict[str, LweParameters] = {
    # Default: 16 fractional bits at |x| <= 8, weights up to 1,000, up to 1,000 sites.
    # Contributions 52 bits per value (6.5 bytes, 1.63x float32), sums 44 bits (5.5 bytes,
    # 1.38x): 1,000 x (21 + 8) + 2,048 = 31,048 < Delta/2 = 32,768.
    "rlwe-n4096-q56": LweParameters(
        set_id=1, name="rlwe-n4096-q56", ring_degree=4096, modulus_bits=56, plaintext_bits=40,
        max_sites=1000, max_site_weight=1000, max_log_q_128=109,
        security_row=HE_STANDARD_ROW_N4096, contribution_drop_bits=4, sum_drop_bits=12),
    # Consortium: the same 16 fractional bits at |x| <= 8 and weights up to 1,000, for
    # federations of up to 64 sites (64 x 1,000 x 8 x 2^16 < 2^35). Contributions 44 bits
    # (5.5 bytes, 1.38x float32), sums 40 bits (5 bytes, 1.25x):
    # 64 x (21 + 8) + 128 = 1,984 < Delta/2 = 2,048. Fewer sites need fewer bits of headroom.
    "rlwe-n4096-q48": LweParameters(
        set_id=3, name="rlwe-n4096-q48", ring_degree=4096, modulus_bits=48, plaintext_bits=36,
        max_sites=64, max_site_weight=1000, max_log_q_128=109,
        security_row=HE_STANDARD_ROW_N4096, contribution_drop_bits=4, sum_drop_bits=8),
    # Precise: 20 fractional bits and weights up to 16,384, up to 1,000 sites. Contributions
    # 60 bits (7.5 bytes), sums 52 bits (6.5 bytes), the same noise budget as the default.
    "rlwe-n4096-q64": LweParameters(
        set_id=2, name="rlwe-n4096-q64", ring_degree=4096, modulus_bits=64, plaintext_bits=48,
        max_sites=1000, max_site_weight=16384, max_log_q_128=109,
        security_row=HE_STANDARD_ROW_N4096, contribution_drop_bits=4, sum_drop_bits=12),
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
