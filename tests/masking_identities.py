"""Sites' custodian-certified identities for masking tests (what each trainer gets with its
wrapped key), made on demand per site name."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ucadi.lwe.custodian import CustodianKey, SiteIdentity, certify_site, generate_custodian_key
from ucadi.lwe.keys import SecretKey
from ucadi.lwe.masking import (
    MaskingRound,
    PublicRoundKeys,
    RoundKeys,
    SharePair,
    SitePairing,
    expand_mask,
    generate_round_keys,
    mask_bits,
)
from ucadi.lwe.ring import multiply_by_secret
from ucadi.lwe.scheme import Ciphertext, decode_phase, sum_of_a


@dataclass
class Identities:
    """One custodian and, per site, a long-term X25519 key it certified."""

    custodian: CustodianKey = field(default_factory=generate_custodian_key)
    keys: dict[str, X25519PrivateKey] = field(default_factory=dict)

    def key(self, site: str) -> X25519PrivateKey:
        return self.keys.setdefault(site, X25519PrivateKey.generate())

    def identity(self, site: str) -> SiteIdentity:
        public = self.key(site).public_key().public_bytes(serialization.Encoding.Raw,
                                                          serialization.PublicFormat.Raw)
        return certify_site(self.custodian, site, public)

    def advertise(self, site: str, keys: RoundKeys) -> PublicRoundKeys:
        return keys.public(self.identity(site))

    def pairing(self, context: MaskingRound, site: str, keys: RoundKeys,
                advertised: Mapping[str, PublicRoundKeys]) -> SitePairing:
        return SitePairing(context, site, keys, advertised, self.key(site),
                           self.custodian.public_key)

    def share_round(self, context: MaskingRound) -> tuple[
            dict[str, RoundKeys], dict[str, PublicRoundKeys], dict[str, dict[str, bytes]],
            dict[str, dict[str, SharePair]]]:
        """Every site of the round advertises fresh round keys and seals its share pairs;
        each opens what was sealed for it: (keys, advertised, sealed by sender and recipient,
        received share pairs)."""
        keys = {site: generate_round_keys() for site in context.sites}
        advertised = {site: self.advertise(site, k) for site, k in keys.items()}
        sealed = {site: self.pairing(context, site, keys[site], advertised).share_messages()
                  for site in context.sites}
        received = {recipient: self.pairing(context, recipient, keys[recipient], advertised
                                            ).open_all({sender: messages[recipient]
                                                        for sender, messages in sealed.items()
                                                        if recipient in messages})
                    for recipient in context.sites}
        return keys, advertised, sealed, received


def strip_known_masks(upload: Ciphertext, secret: SecretKey, seeds: list[bytes],
                      up_to: int = 3) -> Iterator[np.ndarray]:
    """What an attacker holding the LWE secret and these mask seeds can try on one upload:
    its slots decrypted after removing every subset of up to `up_to` of the seeds' masks,
    each with either sign."""
    params = secret.params
    n = upload.body.size
    a_s = multiply_by_secret(sum_of_a(upload.seeds, 0, upload.header.block_stop, params),
                             secret.spectrum, params.modulus_bits).reshape(-1)[:n]
    phase = upload.body - a_s
    expanded = [expand_mask(seed, 0, n, 64) & mask_bits(params) for seed in seeds]
    for size in range(up_to + 1):
        for subset in itertools.combinations(range(len(seeds)), size):
            for signs in itertools.product((1, -1), repeat=size):
                candidate = phase.copy()
                for index, sign in zip(subset, signs, strict=True):
                    candidate = candidate - expanded[index] if sign > 0 else (
                        candidate + expanded[index])
                yield decode_phase(candidate & np.uint64(params.modulus_mask), params)
