"""Work prepared before the update or the sum exists: round seeds, decryption products and the
site's seed ledger; the result must equal decryption from scratch in every case."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from services.trainer.cipher import AnnouncedSum, RoundContext, SiteCipher
from ucadi.lwe import EncodingError, PlainSlots, generate_secret_key
from ucadi.lwe.ledger import SeedLedger
from ucadi.lwe.prepared import DecryptionProduct, prepare_mask, prepare_product, round_seed
from ucadi.lwe.scheme import BATCH_BLOCKS, iter_decrypted_batches, split_batches
from ucadi.lwe.stream import (
    decrypt_fedavg_file,
    decrypt_file,
    encrypt_to_file,
    open_verified,
    sum_files,
)

LAYOUT = hashlib.sha256(b"prepared-layout").digest()
SECRET = generate_secret_key()
SITES = ("north", "south", "west")
# Spans two batches, the last block partial.
LENGTH = SECRET.params.ring_degree * BATCH_BLOCKS + 3_001


def _seed(site: str, round_number: int = 3) -> bytes:
    return round_seed(SECRET.key_id, "fed", round_number, site)


def _encrypt(tmp_path: Path, name: str, plain: np.ndarray, seed: bytes | None) -> Path:
    path = tmp_path / f"{name}.ct"
    encrypt_to_file(path, SECRET, PlainSlots(plain), layout_hash=LAYOUT, round_number=3,
                    mask=prepare_mask(SECRET, plain.size, seed))
    return path


def _round_sum(tmp_path: Path, seeds: dict[str, bytes | None]) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(len(seeds))
    plains = {site: rng.integers(-2**20, 2**20, LENGTH) for site in seeds}
    paths = [_encrypt(tmp_path, site, plains[site], seed) for site, seed in seeds.items()]
    sum_files(paths, tmp_path / "sum.ct")
    return tmp_path / "sum.ct", np.sum(list(plains.values()), axis=0)


def _decrypt_with(product: DecryptionProduct, path: Path) -> np.ndarray:
    ct = open_verified(path)
    body = np.concatenate(list(ct.iter_body_batches()))
    return np.concatenate(list(iter_decrypted_batches(
        SECRET, ct.header, ct.seeds, split_batches(body, SECRET.params.ring_degree), product)))


def test_round_seeds_differ_in_every_field_and_are_reproducible():
    seeds = {_seed("north"), _seed("south"), _seed("north", 4),
             round_seed(SECRET.key_id, "other-fed", 3, "north"),
             round_seed(generate_secret_key().key_id, "fed", 3, "north")}
    assert len(seeds) == 5
    assert _seed("north") == _seed("north") and len(_seed("north")) == 32
    # Length-prefixed fields: moving a character between two fields changes the seed.
    assert round_seed(b"k", "ab", 1, "c") != round_seed(b"k", "a", 1, "bc")


def test_a_product_for_exactly_the_contributors_decrypts_the_sum(tmp_path: Path):
    path, expected = _round_sum(tmp_path, {site: _seed(site) for site in SITES})
    product = prepare_product(SECRET, LENGTH, 3, [_seed(site) for site in SITES])
    assert np.array_equal(_decrypt_with(product, path), expected)
    assert np.array_equal(decrypt_file(SECRET, path), expected)


def test_a_dropped_straggler_and_a_random_seed_are_corrected_exactly(tmp_path: Path):
    # "west" was expected but dropped; "south" encrypted under a fresh random seed.
    path, expected = _round_sum(tmp_path, {"north": _seed("north"), "south": None})
    product = prepare_product(SECRET, LENGTH, 3, [_seed(site) for site in SITES])
    assert np.array_equal(_decrypt_with(product, path), expected)


def test_a_product_of_another_round_or_key_is_not_used(tmp_path: Path):
    path, expected = _round_sum(tmp_path, {site: _seed(site) for site in SITES})
    for product in (prepare_product(SECRET, LENGTH, 4, [_seed(s) for s in SITES]),
                    prepare_product(generate_secret_key(), LENGTH, 3, [_seed(s) for s in SITES]),
                    prepare_product(SECRET, LENGTH - 1, 3, [_seed(s) for s in SITES])):
        assert not product.fits(open_verified(path).header)
        assert np.array_equal(_decrypt_with(product, path), expected)


def test_a_prepared_mask_refuses_a_seed_of_the_wrong_length():
    with pytest.raises(EncodingError, match="32 bytes"):
        prepare_mask(SECRET, 10, b"short")


def test_the_ledger_lets_a_round_seed_encrypt_once_even_across_restarts(tmp_path: Path):
    assert SeedLedger(tmp_path).claim("key", "fed", 3)
    assert not SeedLedger(tmp_path).claim("key", "fed", 3)  # a new process, same folder
    assert not SeedLedger(tmp_path).claim("key", "fed", 2)  # rounds never go back
    assert SeedLedger(tmp_path).claim("key", "other-fed", 3)
    assert SeedLedger(tmp_path).claim("other-key", "fed", 3)
    assert SeedLedger(tmp_path).claim("key", "fed", 4)


def test_site_ciphers_with_prepared_work_give_the_fedavg_and_never_reuse_a_seed(tmp_path: Path):
    rng = np.random.default_rng(2)
    value_count = 20_000
    vectors = {site: rng.uniform(-1, 1, value_count) for site in SITES}
    ciphers = {site: SiteCipher(SECRET, tmp_path / site) for site in SITES}
    context = {site: RoundContext("fed", 3, site, SITES) for site in SITES}
    paths = []
    for site in SITES:
        ciphers[site].prepare(value_count, context[site])
        paths.append(ciphers[site].encrypt_to_file(
            vectors[site], weight=2, round_number=3, layout_hash=LAYOUT.hex(),
            path=tmp_path / f"{site}.ct", site=site))
    assert open_verified(paths[0]).seeds == (_seed("north"),)
    sum_files(paths, tmp_path / "sum.ct")
    announced = AnnouncedSum("fed", 3, "north", SITES, (), 2)
    average = ciphers["north"].decrypt_average(tmp_path / "sum.ct", LAYOUT.hex(), announced)
    reference, _ = decrypt_fedavg_file(SECRET, tmp_path / "sum.ct", ciphers["north"].codec)
    assert np.array_equal(average, reference)
    assert np.abs(average - np.mean(list(vectors.values()), axis=0)).max() < 1e-4
    # The same site preparing round 3 again (a retry, a restart) gets a fresh random seed.
    again = SiteCipher(SECRET, tmp_path / "north")
    again.prepare(value_count, context["north"])
    again.encrypt_to_file(vectors["north"], weight=2, round_number=3, layout_hash=LAYOUT.hex(),
                          path=tmp_path / "retry.ct", site="north")
    assert open_verified(tmp_path / "retry.ct").seeds != (_seed("north"),)
