"""Integrity tags (security finding 19.3), attacked as the central side would: it holds every
ciphertext and the sum, never the key, and can add Delta * m' to any coefficient, re-label the
round, drop, repeat or swap contributions and announce whatever contributors it likes."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from services.trainer.cipher import AnnouncedSum
from ucadi.lwe import FixedPointCodec, generate_secret_key
from ucadi.lwe.integrity import (
    TAG_MODULI,
    TAG_SLOTS,
    SumCheck,
    SumIntegrityError,
    TagAccumulator,
    encode_site_update,
    tag_key,
    update_slot_count,
)
from ucadi.lwe.prepared import round_seed
from ucadi.lwe.scheme import Ciphertext
from ucadi.lwe.stream import (
    decrypt_fedavg_file,
    encrypt_to_file,
    read_ciphertext,
    sum_files,
    write_ciphertext,
)

SECRET = generate_secret_key()
CODEC = FixedPointCodec.for_parameters(SECRET.params)
LAYOUT = hashlib.sha256(b"integrity-layout").digest()
SITES = ("north", "south", "east")
VALUES = 9_000  # the weight and tag slots cross into the third block of 4096
WEIGHTS = {"north": 30, "south": 12, "east": 7}


def _encrypt(tmp: Path, site: str, round_number: int, vector: np.ndarray) -> Path:
    path = tmp / f"{site}-r{round_number}.ct"
    encrypt_to_file(path, SECRET, encode_site_update(vector, WEIGHTS[site], CODEC, SECRET,
                                                     round_number, site),
                    layout_hash=LAYOUT, round_number=round_number)
    return path


@pytest.fixture(scope="module")
def round_files(tmp_path_factory) -> tuple[Path, dict[str, Path], dict[str, np.ndarray]]:
    tmp = tmp_path_factory.mktemp("integrity")
    rng = np.random.default_rng(7)
    vectors = {site: rng.normal(0, 0.3, VALUES).astype(np.float32) for site in SITES}
    files = {site: _encrypt(tmp, site, 4, vectors[site]) for site in SITES}
    sum_files(list(files.values()), tmp / "sum.ct")
    return tmp, files, vectors


def _check(contributors=SITES, round_number: int = 4) -> SumCheck:
    return SumCheck(SECRET, round_number, contributors)


def _tampered(tmp: Path, source: Path, name: str, shifts: dict[int, int]) -> Path:
    """The sum with plaintext slot i shifted by shifts[i] (adding Delta * shift to its b
    coefficient, no key needed), re-written with a valid trailing digest."""
    ct = read_ciphertext(source)
    params = ct.header.params
    body = ct.body.copy()
    for slot, shift in shifts.items():
        moved = (int(body[slot]) + shift * params.delta) % (1 << params.modulus_bits)
        body[slot] = np.uint64(moved)
    out = tmp / name
    write_ciphertext(out, Ciphertext(ct.header, ct.seeds, body))
    return out


def test_an_honest_sum_passes_and_decrypts_to_the_same_fedavg(round_files) -> None:
    tmp, _, vectors = round_files
    checked, weight = decrypt_fedavg_file(SECRET, tmp / "sum.ct", CODEC, check=_check())
    unchecked, _ = decrypt_fedavg_file(SECRET, tmp / "sum.ct", CODEC)
    assert weight == sum(WEIGHTS.values()) and checked.tobytes() == unchecked.tobytes()
    expected = sum(WEIGHTS[s] * vectors[s].astype(np.float64) for s in SITES) / weight
    assert np.abs(checked - expected).max() <= CODEC.resolution + 1e-6
    assert read_ciphertext(tmp / "sum.ct").header.slot_count == update_slot_count(VALUES)


def test_the_reviewers_attack_shifts_five_parameters_unnoticed_without_the_tag_only(
        round_files) -> None:
    """Finding 19.3 as reproduced: +0.5 on five chosen parameters decrypts without error."""
    tmp, _, _ = round_files
    total = sum(WEIGHTS.values())
    step = round(0.5 * 2 ** CODEC.frac_bits * total)
    chosen = [3, 99, 4_100, 8_000, 8_999]
    forged = _tampered(tmp, tmp / "sum.ct", "forged.ct", dict.fromkeys(chosen, step))
    honest, _ = decrypt_fedavg_file(SECRET, tmp / "sum.ct", CODEC)
    shifted, _ = decrypt_fedavg_file(SECRET, forged, CODEC)
    assert np.allclose(shifted[chosen] - honest[chosen], 0.5, atol=1e-4)  # the attack works...
    with pytest.raises(SumIntegrityError) as refused:  # ...until the site checks the tag
        decrypt_fedavg_file(SECRET, forged, CODEC, check=_check())
    assert refused.value.reason == "tag" and "round 4" in str(refused.value)


@pytest.mark.parametrize("what, shifts", [
    ("one unit in one value", {17: 1}),
    ("a multiple of the first tag prime", {5: int(TAG_MODULI[0])}),
    ("a multiple of the second tag prime", {5: int(TAG_MODULI[2])}),
    ("the product of the two primes (past the plaintext)", {5: int(TAG_MODULI[0])
                                                           * int(TAG_MODULI[2])}),
    ("half the plaintext space", {5: 1 << (SECRET.params.plaintext_bits - 1)}),
    ("the weight slot", {VALUES: 3}),
    ("a tag slot alone", {VALUES + 1: 1}),
    ("a value and the tag slots by the same amount", {9: 1, **{VALUES + 1 + j: 1
                                                               for j in range(TAG_SLOTS)}}),
])
def test_any_chosen_shift_is_refused(round_files, what: str, shifts: dict[int, int]) -> None:
    tmp, _, _ = round_files
    forged = _tampered(tmp, tmp / "sum.ct", "shift.ct", shifts)
    with pytest.raises(SumIntegrityError):
        decrypt_fedavg_file(SECRET, forged, CODEC, check=_check())


def test_tag_slots_moved_by_their_primes_leave_the_model_unchanged(round_files) -> None:
    """The one shift a check modulo p cannot see changes only tag slots, never the model."""
    tmp, _, _ = round_files
    forged = _tampered(tmp, tmp / "sum.ct", "tags.ct", {VALUES + 1 + j: int(TAG_MODULI[j])
                                                         for j in range(TAG_SLOTS)})
    passed, weight = decrypt_fedavg_file(SECRET, forged, CODEC, check=_check())
    honest, honest_weight = decrypt_fedavg_file(SECRET, tmp / "sum.ct", CODEC)
    assert passed.tobytes() == honest.tobytes() and weight == honest_weight


def test_random_shifts_are_all_refused(round_files) -> None:
    tmp, _, _ = round_files
    rng = np.random.default_rng(11)
    for trial in range(25):
        slots = rng.choice(update_slot_count(VALUES), size=int(rng.integers(1, 6)), replace=False)
        shifts = {int(s): int(rng.integers(1, 1 << 20)) * int(rng.choice([-1, 1])) for s in slots}
        forged = _tampered(tmp, tmp / "sum.ct", f"random-{trial}.ct", shifts)
        with pytest.raises(SumIntegrityError):
            decrypt_fedavg_file(SECRET, forged, CODEC, check=_check())
        forged.unlink()


def test_other_contribution_sets_than_announced_are_refused(round_files) -> None:
    tmp, files, vectors = round_files
    # One dropped while all three are announced; the same two announced passes.
    sum_files([files["north"], files["south"]], tmp / "two.ct")
    with pytest.raises(SumIntegrityError):
        decrypt_fedavg_file(SECRET, tmp / "two.ct", CODEC, check=_check())
    decrypt_fedavg_file(SECRET, tmp / "two.ct", CODEC, check=_check(("south", "north")))
    # Announced as another site's update: the site term does not match.
    with pytest.raises(SumIntegrityError):
        decrypt_fedavg_file(SECRET, tmp / "two.ct", CODEC, check=_check(("north", "east")))
    # A second update of one site in the round (fresh randomness), counted in place of another.
    (tmp / "again").mkdir()
    again = _encrypt(tmp / "again", "north", 4, vectors["north"])
    sum_files([files["north"], again], tmp / "north-twice.ct")
    with pytest.raises(SumIntegrityError):
        decrypt_fedavg_file(SECRET, tmp / "north-twice.ct", CODEC,
                            check=_check(("north", "south")))


def test_an_old_rounds_sum_relabelled_as_a_new_round_is_refused(round_files) -> None:
    tmp, _, _ = round_files
    ct = read_ciphertext(tmp / "sum.ct")
    relabelled = Ciphertext(replace(ct.header, round_number=5), ct.seeds, ct.body)
    write_ciphertext(tmp / "relabelled.ct", relabelled)
    assert decrypt_fedavg_file(SECRET, tmp / "relabelled.ct", CODEC)[1] == sum(WEIGHTS.values())
    with pytest.raises(SumIntegrityError):
        decrypt_fedavg_file(SECRET, tmp / "relabelled.ct", CODEC, check=_check(round_number=5))


def test_another_keys_tags_do_not_verify(round_files) -> None:
    """The coefficients come from the secret: a key the central side made up cannot tag."""
    tmp, _, _ = round_files
    other = generate_secret_key()
    assert tag_key(other, 4) != tag_key(SECRET, 4)
    accumulator = TagAccumulator(tag_key(SECRET, 4))
    accumulator.add(0, np.arange(-50, 50, dtype=np.int64))
    split = TagAccumulator(tag_key(SECRET, 4))  # any slot ranges, any order: the same tags
    split.add(60, np.arange(10, 50, dtype=np.int64))
    split.add(0, np.arange(-50, 10, dtype=np.int64))
    assert np.array_equal(accumulator.sums, split.sums)


def _announced(**fields) -> AnnouncedSum:
    base = dict(federation="fed", round_number=4, site="north", contributors=SITES,
                other_sites=("west",), min_contributors=2)
    base.update(fields)
    return AnnouncedSum(**base)


def _seeds(*sites: str, round_number: int = 4) -> list[bytes]:
    return [round_seed(SECRET.key_id, "fed", round_number, s) for s in sites]


def test_the_announcement_is_checked_against_the_ciphertext() -> None:
    _announced().check(4, _seeds(*SITES), SECRET.key_id)
    _announced().check(4, [*_seeds("north", "south"), bytes(32)], SECRET.key_id)  # fresh seed

    def reason(announced: AnnouncedSum, found_round: int, seeds: list[bytes]) -> str:
        with pytest.raises(SumIntegrityError) as refused:
            announced.check(found_round, seeds, SECRET.key_id)
        return refused.value.reason

    assert reason(_announced(), 3, _seeds(*SITES)) == "round"
    assert reason(_announced(contributors=("east",)), 4, _seeds("east")) == "quorum"
    assert reason(_announced(contributors=("north", "north")), 4, _seeds("north")) == "quorum"
    assert reason(_announced(min_contributors=4), 4, _seeds(*SITES)) == "quorum"
    assert reason(_announced(), 4, _seeds("north", "south")) == "contributors"
    assert reason(_announced(), 4, _seeds("north", "north", "south")) == "contributors"
    assert reason(_announced(), 4, _seeds("north", "south", "west")) == "contributors"
    # A one-site sum of this site's own update exposes nothing: a federation of one may run.
    _announced(contributors=("north",), other_sites=()).check(4, _seeds("north"),
                                                              SECRET.key_id)
