"""Additively homomorphic ring-LWE encryption of fixed-point model vectors (pure numpy).

Typical site flow:
    codec = FixedPointCodec.for_parameters(secret.params)
    update = encode_update(flat_params, weight, codec, secret.params)
    ct = encrypt(secret, update, layout_hash=layout, round_number=r)      # or encrypt_to_file
central flow: add([...]) / sum_files([...], out) ; site again: fedavg(decrypt(secret, sum), codec).
"""

from ucadi.lwe.codec import EncodedUpdate, FixedPointCodec, encode_update, fedavg, split_weight
from ucadi.lwe.errors import (
    CiphertextFormatError,
    CiphertextMismatchError,
    DuplicateContributionError,
    EncodingError,
    KeyWrapError,
    LweError,
    ParameterError,
)
from ucadi.lwe.keys import SecretKey, generate_secret_key
from ucadi.lwe.params import (
    DEFAULT_PARAMETER_SET,
    PARAMETER_SETS,
    LweParameters,
    get_parameters,
)
from ucadi.lwe.scheme import Ciphertext, CiphertextHeader, PlainSlots, add, decrypt, encrypt
from ucadi.lwe.serialization import MEDIA_TYPE, from_bytes, read_header, to_bytes

__all__ = [
    "DEFAULT_PARAMETER_SET", "MEDIA_TYPE", "PARAMETER_SETS", "Ciphertext", "CiphertextFormatError",
    "CiphertextHeader", "CiphertextMismatchError", "DuplicateContributionError", "EncodedUpdate",
    "EncodingError", "FixedPointCodec", "KeyWrapError", "LweError", "LweParameters",
    "ParameterError", "PlainSlots", "SecretKey", "add", "decrypt", "encode_update", "encrypt",
    "fedavg", "from_bytes", "generate_secret_key", "get_parameters", "read_header",
    "split_weight", "to_bytes",
]
