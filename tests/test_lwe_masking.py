"""Pairwise-cancelling masks over ciphertext bodies (issue 21): the unmasked sum is bit for bit
the shared-key sum with up to N - t dropouts, before or after a site's upload; a coalition of
the central side and t - 1 sites, holding the LWE secret, reads no other site's update; Shamir
shares and sealed share pairs behave as the protocol needs."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from masking_identities import Identities, strip_known_masks

from ucadi.lwe import FixedPointCodec, fedavg, generate_secret_key
from ucadi.lwe.integrity import TAG_SLOTS, SumCheck, encode_site_update
from ucadi.lwe.masking import (
    MaskingError,
    MaskingRound,
    PublicRoundKeys,
    RoundKeys,
    SharePair,
    SitePairing,
    answer_unmasking,
    apply_mask_terms,
    default_threshold,
    expand_mask,
    generate_round_keys,
    mask_bits,
    mask_sign,
    open_share_pair,
    pairwise_seed,
    recover_round_secrets,
    unmask_sum,
    unmasking_terms,
)
from ucadi.lwe.scheme import Ciphertext, add, decrypt, encrypt
from ucadi.lwe.serialization import from_bytes, to_bytes
from ucadi.lwe.shamir import SharingError, recover_secret, split_secret

SECRET = generate_secret_key()
PARAMS = SECRET.params
Q_BITS = PARAMS.modulus_bits
CODEC = FixedPointCodec.for_parameters(PARAMS)
LAYOUT = hashlib.sha256(b"masking-layout").digest()
ROUND = 6
SITES = ("east", "north", "south", "west", "wuhan")  # sorted
THRESHOLD = 3  # N = 5: up to 2 dropouts
VALUES = 9_000  # the weight and tag slots cross into the third block of 4096
WEIGHTS = dict(zip(SITES, (30, 12, 7, 21, 5), strict=True))
IDENTITIES = Identities()


def _context(sites=SITES, threshold=THRESHOLD, round_number=ROUND) -> MaskingRound:
    return MaskingRound("fed", SECRET.key_id, round_number, tuple(sites), threshold)


@dataclass
class SimulatedRound:
    """Everything a round's parties send, store and receive, run in memory."""

    context: MaskingRound
    keys: dict[str, RoundKeys]
    advertised: dict[str, PublicRoundKeys]
    sealed: dict[str, dict[str, bytes]]          # sender -> recipient -> sealed share pair
    received: dict[str, dict[str, SharePair]]    # recipient -> sender -> opened share pair
    vectors: dict[str, np.ndarray]
    plain_slots: dict[str, np.ndarray]
    uploads: dict[str, bytes] = field(default_factory=dict)  # masked ciphertexts as sent
    unmasked: dict[str, bytes] = field(default_factory=dict)  # the same, had it not masked

    def pairing(self, site: str) -> SitePairing:
        return IDENTITIES.pairing(self.context, site, self.keys[site], self.advertised)


def _share_keys(context: MaskingRound) -> SimulatedRound:
    """Advertise keys and share keys: every site of the round takes part."""
    keys, advertised, sealed, received = IDENTITIES.share_round(context)
    rng = np.random.default_rng(context.round_number)
    vectors = {site: rng.normal(0, 0.3, VALUES).astype(np.float32) for site in context.sites}
    plain = {site: encode_site_update(vectors[site], WEIGHTS[site], CODEC, SECRET,
                                      context.round_number, site).slots(0, VALUES + 1 + TAG_SLOTS)
             for site in context.sites}
    return SimulatedRound(context, keys, advertised, sealed, received, vectors, plain)


def _masked_upload(sim: SimulatedRound, site: str) -> bytes:
    """The site's ciphertext as it leaves the site: encrypted, masked, rounded, serialized."""
    update = encode_site_update(sim.vectors[site], WEIGHTS[site], CODEC, SECRET,
                                sim.context.round_number, site)
    ct = encrypt(SECRET, update, layout_hash=LAYOUT, round_number=sim.context.round_number)
    sim.unmasked[site] = to_bytes(ct)
    body = ct.body.copy()
    sim.pairing(site).mask_body(body, sim.context.sites, PARAMS)
    data = to_bytes(Ciphertext(ct.header, ct.seeds, body))
    sim.uploads[site] = data
    return data


def _unmasked_sum(sim: SimulatedRound, survivors: set[str], answering: set[str]) -> Ciphertext:
    """The central side seals the sum of the survivors' uploads (rounded as a global version
    is) and collects the answers; the sum less the masks they give is what a site decrypts."""
    dropped = set(sim.context.sites) - survivors
    summed = from_bytes(to_bytes(add([from_bytes(sim.uploads[site])
                                      for site in sorted(survivors)])))
    answers = {site: answer_unmasking(sim.context, site, sim.received[site], survivors,
                                      dropped) for site in sorted(answering)}
    secrets = recover_round_secrets(sim.context, answers, survivors, dropped, sim.advertised)
    body = summed.body.copy()
    unmask_sum(body, unmasking_terms(sim.context, secrets, sim.advertised, survivors), PARAMS)
    return from_bytes(to_bytes(Ciphertext(summed.header, summed.seeds, body)))


@pytest.mark.parametrize(("before_upload", "after_upload"), [
    ((), ()),
    (("north", "west"), ()),          # N - t sites drop after sharing keys, before uploading
    (("south",), ("east",)),          # one before, one after its ciphertext was sent
    ((), ("wuhan", "north")),         # N - t sites drop after sending their ciphertexts
])
def test_the_unmasked_sum_is_the_shared_key_sum_byte_for_byte(before_upload, after_upload):
    """...and so decrypts bit for bit to the shared-key FedAvg and passes its integrity tag."""
    sim = _share_keys(_context())
    survivors = set(SITES) - set(before_upload)
    for site in sorted(survivors):
        _masked_upload(sim, site)
    sealed = _unmasked_sum(sim, survivors, survivors - set(after_upload))
    shared_key_sum = add([from_bytes(sim.unmasked[s]) for s in sorted(survivors)])
    assert to_bytes(sealed) == to_bytes(shared_key_sum)  # byte for byte
    slots = decrypt(SECRET, sealed)
    assert np.array_equal(slots, np.sum([sim.plain_slots[s] for s in survivors], axis=0))
    check = SumCheck(SECRET, ROUND, sorted(survivors))
    check.add(0, slots[:VALUES + 1])
    check.verify(slots[VALUES + 1:])
    plain_sum = add([encrypt(SECRET, encode_site_update(sim.vectors[s], WEIGHTS[s], CODEC,
                                                        SECRET, ROUND, s),
                             layout_hash=LAYOUT, round_number=ROUND)
                     for s in sorted(survivors)])
    shared_key = fedavg(decrypt(SECRET, from_bytes(to_bytes(plain_sum)))[:VALUES + 1], CODEC)
    assert np.array_equal(fedavg(slots[:VALUES + 1], CODEC), shared_key)


def test_pairwise_masks_cancel_and_seeds_are_bound_to_the_round():
    sim = _share_keys(_context())
    total = np.zeros(5_000, dtype=np.uint64)
    for site in SITES:
        pairing = sim.pairing(site)
        for seed, sign in pairing.mask_terms(SITES)[1:]:  # pairwise only, no self-mask
            mask = expand_mask(seed, 0, total.size, 64) & mask_bits(PARAMS)
            total = total + mask if sign > 0 else total - mask
    assert not (total & np.uint64(PARAMS.modulus_mask)).any()
    east, north = sim.keys["east"], sim.keys["north"]
    seed = pairwise_seed(sim.context, east.mask_key, sim.advertised["north"].mask_public,
                         "east", "north")
    assert seed == pairwise_seed(sim.context, north.mask_key, sim.advertised["east"].mask_public,
                                 "north", "east")
    for other in (_context(round_number=ROUND + 1),
                  MaskingRound("other-fed", SECRET.key_id, ROUND, SITES, THRESHOLD),
                  MaskingRound("fed", bytes(16), ROUND, SITES, THRESHOLD)):
        assert pairwise_seed(other, east.mask_key, sim.advertised["north"].mask_public,
                             "east", "north") != seed


def test_a_mask_range_is_the_same_whether_expanded_whole_or_in_pieces():
    seed = bytes(range(32))
    whole = expand_mask(seed, 0, 1_001, Q_BITS)
    for start, stop in ((0, 1), (37, 60), (38, 1_001), (999, 1_001)):
        assert np.array_equal(expand_mask(seed, start, stop - start, Q_BITS), whole[start:stop])
    assert int(whole.max()) < 1 << Q_BITS
    # The fast path (one reused buffer, batch by batch, odd starts) adds exactly these masks.
    pieces = np.zeros(1_001, dtype=np.uint64)
    for start, stop in ((0, 37), (37, 500), (500, 1_001)):
        apply_mask_terms(pieces[start:stop], start, [(seed, 1)], PARAMS)
    assert np.array_equal(pieces, whole & mask_bits(PARAMS))


def _plausible(slots: np.ndarray) -> float:
    """Fraction of value slots a real weighted update could hold (|w x| <= bound)."""
    limit = max(WEIGHTS.values()) * CODEC.bound * 2 ** CODEC.frac_bits
    return float(np.mean(np.abs(slots[:VALUES]) <= limit))


def test_the_central_side_and_t_minus_1_sites_cannot_read_another_sites_update():
    """The coalition holds the LWE secret, its sites' round keys and received shares, every
    advertisement, sealed share message, upload and unmasking answer; it tries every mask it
    can compute, with both signs, on every honest site's upload."""
    sim = _share_keys(_context())
    for site in SITES:
        _masked_upload(sim, site)
    coalition = ("east", "south")  # t - 1 = 2 sites
    survivors = set(SITES)
    answers = {site: answer_unmasking(sim.context, site, sim.received[site], survivors, set())
               for site in SITES}
    known_seeds = [sim.keys[c].self_seed for c in coalition]
    known_seeds += recover_round_secrets(sim.context, answers, survivors, set(),
                                         sim.advertised).self_seeds.values()
    for member in coalition:  # every pairwise seed a coalition mask key agrees with anyone
        for peer in SITES:
            if peer != member:
                known_seeds.append(pairwise_seed(sim.context, sim.keys[member].mask_key,
                                                 sim.advertised[peer].mask_public, member, peer))
    for target in sorted(set(SITES) - set(coalition)):
        # The target's mask key: the coalition's own t - 1 shares and every answer.
        shares = {sim.context.holder(c): sim.received[c][target].mask_key for c in coalition}
        with pytest.raises(SharingError):
            recover_secret(shares, THRESHOLD)
        assert not any(target in a.mask_keys for a in answers.values())
        best = _best_plausible(sim, target, known_seeds)
        assert best < 0.01, f"{target}'s update became readable ({best:.3f} plausible)"


def test_the_attack_reads_an_update_once_it_holds_the_one_missing_seed():
    """Control for the attack above: with the pairwise seed between the two honest sites
    (which no coalition member holds), the same search finds the update exactly."""
    sim = _share_keys(_context(("east", "north", "south"), threshold=2))
    for site in sim.context.sites:
        _masked_upload(sim, site)
    coalition, target, other = "east", "north", "south"
    seeds = [sim.keys[target].self_seed,
             pairwise_seed(sim.context, sim.keys[coalition].mask_key,
                           sim.advertised[target].mask_public, coalition, target)]
    assert _best_plausible(sim, target, seeds) < 0.01
    missing = pairwise_seed(sim.context, sim.keys[other].mask_key,
                            sim.advertised[target].mask_public, other, target)
    assert _best_plausible(sim, target, [*seeds, missing]) == 1.0


def test_a_late_upload_of_a_site_declared_dropped_stays_hidden():
    """Its mask key is recovered (to cancel its pairwise masks) but its self-mask seed is not:
    the centre, holding the LWE secret through a colluding site, still cannot read it."""
    sim = _share_keys(_context())
    late = "west"
    survivors = set(SITES) - {late}
    for site in SITES:
        _masked_upload(sim, site)  # west's arrives after the uploads closed
    answers = {site: answer_unmasking(sim.context, site, sim.received[site], survivors, {late})
               for site in sorted(survivors)}
    secrets = recover_round_secrets(sim.context, answers, survivors, {late}, sim.advertised)
    assert late in secrets.mask_keys and late not in secrets.self_seeds
    key = X25519PrivateKey.from_private_bytes(secrets.mask_keys[late])
    pairwise = [(pairwise_seed(sim.context, key, sim.advertised[peer].mask_public, late, peer),
                 mask_sign(late, peer)) for peer in sorted(survivors)]
    seeds = [seed for seed, _ in pairwise] + list(secrets.self_seeds.values())
    upload = from_bytes(sim.uploads[late])
    every_pairwise = sum_masks(upload.body.size, pairwise)
    stripped = Ciphertext(upload.header, upload.seeds,
                          (upload.body - every_pairwise) & np.uint64(PARAMS.modulus_mask))
    assert _plausible(decrypt(SECRET, stripped)) < 0.01
    assert _best_plausible(sim, late, seeds) < 0.01


def _best_plausible(sim: SimulatedRound, target: str, known_seeds: list[bytes]) -> float:
    upload = from_bytes(sim.uploads[target])
    best = 0.0
    for slots in _strip(upload, list(dict.fromkeys(known_seeds))):
        if np.array_equal(slots, sim.plain_slots[target]):
            return 1.0
        best = max(best, _plausible(slots))
    return best


def _strip(upload: Ciphertext, seeds: list[bytes]) -> Iterator[np.ndarray]:
    """The upload decrypted with the LWE secret after removing every subset of up to three
    known masks (a site's self-mask and two pairwise masks), each with either sign."""
    return strip_known_masks(upload, SECRET, seeds, up_to=3)


def sum_masks(count: int, terms: list[tuple[bytes, int]]) -> np.ndarray:
    total = np.zeros(count, dtype=np.uint64)
    for seed, sign in terms:
        mask = expand_mask(seed, 0, count, 64) & mask_bits(PARAMS)
        total = total + mask if sign > 0 else total - mask
    return total


def test_an_honest_site_refuses_answers_that_could_reveal_both_secrets_of_a_site():
    sim = _share_keys(_context())
    received = sim.received["east"]
    everyone = set(SITES)
    with pytest.raises(MaskingError, match="both a survivor and dropped"):
        answer_unmasking(sim.context, "east", received, everyone, {"west"})
    with pytest.raises(MaskingError, match="fewer than the threshold"):
        answer_unmasking(sim.context, "east", received, {"east", "north"}, {"south"})
    with pytest.raises(MaskingError, match="only as a survivor"):
        answer_unmasking(sim.context, "east", received, everyone - {"east"}, {"east"})
    first = (frozenset(everyone - {"west"}), frozenset({"west"}))
    answer_unmasking(sim.context, "east", received, *first, answered_before=first)
    with pytest.raises(MaskingError, match="already answered"):
        answer_unmasking(sim.context, "east", received, everyone, set(), answered_before=first)


def test_sealed_shares_open_only_for_their_recipient_round_and_bytes():
    sim = _share_keys(_context())
    sealed = sim.sealed["east"]["north"]
    north = sim.keys["north"]

    def opened(context, keys, recipient, blob):
        return open_share_pair(context, keys, IDENTITIES.key(recipient), recipient, "east",
                               sim.advertised, blob)

    assert opened(sim.context, north, "north", sealed) == sim.received["north"]["east"]
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    attempts = [(sim.context, north, "north", altered),
                (_context(round_number=ROUND + 1), north, "north", sealed),
                (sim.context, sim.keys["south"], "south", sealed),
                (sim.context, north, "north", sim.sealed["east"]["south"])]
    for context, keys, recipient, blob in attempts:
        with pytest.raises(MaskingError, match="do not open"):
            opened(context, keys, recipient, blob)


def _substituted(sim: SimulatedRound, victim: str, attacker_keys: RoundKeys,
                 identity: bytes | None = None) -> dict[str, PublicRoundKeys]:
    """The key set with `victim`'s round keys replaced by the attacker's (and its identity,
    when given), as a relaying central side would show it to the other sites."""
    forged = attacker_keys.public(IDENTITIES.identity(victim))
    if identity is not None:
        forged = replace(forged, identity=identity)
    return {**sim.advertised, victim: forged}


def test_a_central_side_substituting_a_sites_round_keys_gets_nothing_and_is_caught():
    """The relaying central side, colluding with t - 1 sites, shows every other site its own
    round keys in place of `west`'s, hoping to collect the shares sealed for west (and with t
    of them west's self-mask seed and mask key) and to know every pairwise seed west's peers
    use with "west". It cannot present west's identity with other keys in any way a site
    accepts, and the share pairs it receives stay closed to it."""
    sim = _share_keys(_context())
    attacker = generate_round_keys()
    attacker_identity = X25519PrivateKey.generate()  # the central side's own long-term key
    shown = _substituted(sim, "west", attacker)  # west's real certified identity kept

    # Honest east seals its share pair for "west" under the substituted keys: the central side
    # opens it with everything it holds (the attacker's round keys, its own identity key, any
    # colluding site's identity key) and fails, because the key needs west's identity key.
    east = IDENTITIES.pairing(sim.context, "east", sim.keys["east"], shown)
    for_west = east.share_messages()["west"]
    for holder_key in (attacker_identity, IDENTITIES.key("north"), IDENTITIES.key("south")):
        with pytest.raises(MaskingError, match="do not open"):
            open_share_pair(sim.context, attacker, holder_key, "west", "east", shown, for_west)

    # A forged identity for west (the central side's own key, signed by anyone but the
    # custodian) is refused when the pairing is made: the site takes no part in the round.
    from ucadi.lwe.custodian import certify_site, generate_custodian_key

    raw = attacker_identity.public_key().public_bytes_raw()
    for forged_identity in (certify_site(generate_custodian_key(), "west", raw).to_bytes(),
                            IDENTITIES.identity("north").to_bytes(), bytes(96)):
        with pytest.raises(MaskingError, match="not certified by the configured key custodian"):
            IDENTITIES.pairing(sim.context, "east", sim.keys["east"],
                               _substituted(sim, "west", attacker, forged_identity))

    # And the sites that were shown different key sets find out before masking anything:
    # north (shown the real set) cannot open what east sealed under the substituted one.
    north = sim.pairing("north")
    with pytest.raises(MaskingError, match="other round keys"):
        north.open_all({"east": east.share_messages()["north"]})
    assert north.open_all({"east": sim.sealed["east"]["north"]})["east"] == (
        sim.received["north"]["east"])


def test_wrong_mask_key_shares_are_caught_against_the_advertised_key():
    sim = _share_keys(_context())
    survivors = set(SITES) - {"west"}
    answers = {site: answer_unmasking(sim.context, site, sim.received[site], survivors,
                                      {"west"}) for site in sorted(survivors)[:THRESHOLD]}
    forged = dict(answers)
    east = answers["east"]
    forged["east"] = replace(east, mask_keys={"west": (east.mask_keys["west"] + 1)})
    with pytest.raises((MaskingError, SharingError)):
        recover_round_secrets(sim.context, forged, survivors, {"west"}, sim.advertised)
    assert recover_round_secrets(sim.context, answers, survivors, {"west"}, sim.advertised)


def test_shamir_any_t_shares_recover_fewer_do_not_and_an_altered_extra_share_is_caught():
    secret = bytes(range(100, 132))
    shares = split_secret(secret, 3, [1, 2, 3, 4, 5])
    for subset in itertools.combinations(shares, 3):
        assert recover_secret({x: shares[x] for x in subset}, 3) == secret
    with pytest.raises(SharingError, match="at least 3"):
        recover_secret({1: shares[1], 2: shares[2]}, 3)
    with pytest.raises(SharingError, match="altered"):
        recover_secret({**shares, 5: (shares[5] + 1)}, 3)


def test_round_keys_survive_their_state_file_and_thresholds_are_a_majority():
    keys = generate_round_keys()
    again = RoundKeys.from_bytes(keys.to_bytes())
    assert again.to_bytes() == keys.to_bytes() and again.self_seed == keys.self_seed
    assert [default_threshold(n) for n in (2, 3, 4, 5, 10)] == [2, 2, 3, 3, 6]
    with pytest.raises(MaskingError):
        MaskingRound("fed", SECRET.key_id, 1, ("b", "a"), 2)
    with pytest.raises(MaskingError):
        MaskingRound("fed", SECRET.key_id, 1, ("a", "b"), 3)
