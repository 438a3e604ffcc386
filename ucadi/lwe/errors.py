"""Errors of the LWE scheme; each says what was wrong and what is accepted."""

from ucadi.errors import UcadiError


class LweError(UcadiError):
    """Base of the cryptosystem's errors."""


class ParameterError(LweError):
    """An unknown or inconsistent parameter set."""


class EncodingError(LweError):
    """Values the fixed-point codec refuses to encode (NaN, Inf, out of bound, bad weight)."""


class CiphertextFormatError(LweError):
    """A serialized ciphertext is truncated, tampered with or not a UCADI ciphertext."""


class CiphertextMismatchError(LweError):
    """Ciphertexts (or a ciphertext and a key) that cannot be combined: different key id,
    parameter set, layout, round, length or block range."""

    status = "FAILED_PRECONDITION"


class DuplicateContributionError(LweError):
    """The same encryption (same seed) was offered twice to one sum."""

    status = "ALREADY_EXISTS"


class KeyWrapError(LweError):
    """A wrapped key that cannot be opened (wrong site key, wrong key id or site, tampered)."""

    status = "PERMISSION_DENIED"
