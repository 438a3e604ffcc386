"""The sum service's store on its own: running sums in memory, durable contributions, sealing."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from services.crypto.sumstore import DuplicateSiteError, RoundSpec, RoundStateError, SumStore
from ucadi.errors import UcadiError
from ucadi.lwe import PlainSlots, from_bytes, generate_secret_key, to_bytes
from ucadi.lwe.errors import CiphertextMismatchError, DuplicateContributionError
from ucadi.lwe.serialization import serialized_size
from ucadi.lwe.stream import decrypt_file, encrypt_to_file, open_verified
from ucadi.wire import iter_file_chunks

LAYOUT = hashlib.sha256(b"sumstore-layout").digest()
SECRET = generate_secret_key()
SLOTS = 5000


def _spec(round_number: int = 1) -> RoundSpec:
    return RoundSpec("fed", round_number, SECRET.key_id_hex, SECRET.params.name, LAYOUT, SLOTS,
                     0, 0)


def _contribution(tmp_path: Path, name: str, plain: np.ndarray) -> Path:
    path = tmp_path / f"{name}.ct"
    encrypt_to_file(path, SECRET, PlainSlots(plain), layout_hash=LAYOUT, round_number=1)
    return path


def test_contributions_stay_as_files_until_the_seal_writes_the_sum_once(tmp_path: Path):
    store = SumStore(tmp_path / "state")
    store.open_round(_spec())
    plains = [np.arange(SLOTS) * (k + 1) for k in range(3)]
    for k, plain in enumerate(plains[:2]):
        store.add_contribution("fed", 1, f"site{k}", iter_file_chunks(
            _contribution(tmp_path, f"site{k}", plain)))
    held = store.status("fed", 1).contributions
    assert len(held) == 2 and all(p.exists() for p in held)
    store.open_round(_spec(2))
    with pytest.raises(RoundStateError, match="no contributions"):
        store.seal("fed", 2)

    store.close()  # a restart: the running sum is rebuilt from the stored contributions
    store = SumStore(tmp_path / "state")
    store.add_contribution("fed", 1, "site2", iter_file_chunks(
        _contribution(tmp_path, "site2", plains[2])))
    sealed = store.seal("fed", 1)  # answered from memory; the file is written behind it
    assert sealed.state.state == "sealed"
    assert sealed.state.sites == ("site0", "site1", "site2")
    (tmp_path / "sum.ct").write_bytes(sealed.data)
    assert np.array_equal(decrypt_file(SECRET, tmp_path / "sum.ct"), sum(plains))
    with pytest.raises(RoundStateError, match="late contributions"):
        store.add_contribution("fed", 1, "site3", iter_file_chunks(
            _contribution(tmp_path, "site3", plains[0])))
    store.close()  # waits for the writer

    store = SumStore(tmp_path / "state")
    again = store.seal("fed", 1)  # repeatable: the same bytes, now from the stored file
    assert again.path is not None and again.path.read_bytes() == sealed.data
    assert not any(p.exists() for p in again.state.contributions)
    store.close()


def test_a_seal_repeated_before_the_sum_is_stored_rebuilds_it_from_the_contributions(
        tmp_path: Path):
    store = SumStore(tmp_path / "state")
    store.open_round(_spec())
    plains = [np.arange(SLOTS) * (k + 1) for k in range(2)]
    for k, plain in enumerate(plains):
        store.add_contribution("fed", 1, f"site{k}", iter_file_chunks(
            _contribution(tmp_path, f"site{k}", plain)))
    store._store_sum = lambda *args: None  # the service dies before its writer stores the sum
    first = store.seal("fed", 1)
    store.close()

    store = SumStore(tmp_path / "state")
    again = store.seal("fed", 1)  # sealed, no sum file: rebuilt from the kept contributions
    assert again.data == first.data and again.sha256 == first.sha256
    store.close()
    stored = SumStore(tmp_path / "state").seal("fed", 1)
    assert stored.path is not None and stored.path.read_bytes() == first.data


def test_a_replayed_ciphertext_under_another_site_name_is_refused_and_nothing_is_kept(
        tmp_path: Path):
    store = SumStore(tmp_path / "state")
    store.open_round(_spec())
    path = _contribution(tmp_path, "a", np.arange(SLOTS))
    store.add_contribution("fed", 1, "site-a", iter_file_chunks(path))
    with pytest.raises(DuplicateContributionError):
        store.add_contribution("fed", 1, "site-b", iter_file_chunks(path))
    state = store.status("fed", 1)
    assert state.sites == ("site-a",) and len(list(state.contributions[0].parent.iterdir())) == 1
    store.close()


def test_the_sealed_sum_is_sent_at_the_sum_width_and_a_sum_posing_as_a_contribution_is_refused(
        tmp_path: Path):
    store = SumStore(tmp_path / "state")
    store.open_round(_spec())
    plain = np.arange(SLOTS) - SLOTS // 2
    for site in ("site0", "site1"):
        store.add_contribution("fed", 1, site, iter_file_chunks(
            _contribution(tmp_path, site, plain)))
    sealed = store.seal("fed", 1)
    (tmp_path / "sum.ct").write_bytes(sealed.data)
    total = open_verified(tmp_path / "sum.ct")
    assert total.header.dropped_bits == SECRET.params.sum_drop_bits  # 44 bits per value
    assert len(sealed.data) == serialized_size(total.header) < (tmp_path / "site0.ct").stat(
        ).st_size
    assert np.array_equal(decrypt_file(SECRET, tmp_path / "sum.ct"), 2 * plain)
    store.open_round(_spec(2))
    (tmp_path / "sum2.ct").write_bytes(to_bytes(replace(
        from_bytes(sealed.data.tobytes()), header=replace(total.header, round_number=2))))
    with pytest.raises(CiphertextMismatchError, match="not a sum of 2"):
        store.add_contribution("fed", 2, "site0", iter_file_chunks(tmp_path / "sum2.ct"))
    assert store.status("fed", 2).sites == ()
    store.close()


def test_a_seal_keeps_exactly_the_accepted_sites_and_the_aggregator_replaces_a_sites_own(
        tmp_path: Path):
    """Sites may add their own ciphertexts; only those the aggregator accepted are summed."""
    store = SumStore(tmp_path / "state")
    store.open_round(_spec())
    plains = {name: np.arange(SLOTS) * (k + 1) for k, name in enumerate(["a", "b", "c"])}
    for name in ("a", "b"):  # each site sent its own
        store.add_contribution("fed", 1, name, iter_file_chunks(
            _contribution(tmp_path, name, plains[name])))
    # The aggregator refused a's own and accepted another upload from a: it replaces it.
    accepted = _contribution(tmp_path, "a-accepted", plains["c"])
    digest = hashlib.sha256(accepted.read_bytes()).hexdigest()
    with pytest.raises(UcadiError, match="is not the"):
        store.add_contribution("fed", 1, "a", iter_file_chunks(accepted), "0" * 64)
    _, added = store.add_contribution("fed", 1, "a", iter_file_chunks(accepted), digest)
    assert added == digest
    for vouched in (digest, ""):  # the same again, or a site's own: one contribution each
        with pytest.raises(DuplicateSiteError):
            store.add_contribution("fed", 1, "a", iter_file_chunks(accepted), vouched)
    assert dict(zip(store.status("fed", 1).sites, store.status("fed", 1).digests,
                    strict=True))["a"] == digest
    with pytest.raises(RoundStateError, match="no contribution from c"):
        store.seal("fed", 1, ["a", "c"])
    assert store.status("fed", 1).state == "open", "a refused seal changes nothing"

    with pytest.raises(RoundStateError, match="still open"):
        store.fetch("fed", 1)
    sealed = store.seal("fed", 1, ["a"])  # b's own was never accepted: left out
    assert sealed.state.sites == ("a",)
    (tmp_path / "sum.ct").write_bytes(sealed.data)
    assert np.array_equal(decrypt_file(SECRET, tmp_path / "sum.ct"), plains["c"])
    fetched = store.fetch("fed", 1)  # what sites fetch: the same bytes
    assert bytes(fetched.data or fetched.path.read_bytes()) == bytes(sealed.data)
    store.close()
    store = SumStore(tmp_path / "state")  # the discarded file is gone, the seal repeats
    assert store.seal("fed", 1).state.sites == ("a",)
    assert store.fetch("fed", 1).path.read_bytes() == bytes(sealed.data)
    assert len(list((tmp_path / "state" / "rounds" / "fed" / "1").glob("b-*"))) == 0
    store.close()


def test_a_contribution_using_another_sites_public_round_seed_is_refused(tmp_path: Path):
    """A site could otherwise knock a victim out of the round: the victim's own ciphertext,
    under its own round seed, would then repeat a seed already summed."""
    from ucadi.lwe.prepared import prepare_mask, round_seed

    store = SumStore(tmp_path / "state")
    store.open_round(_spec())
    victims_seed = round_seed(SECRET.key_id, "fed", 1, "victim")
    attack = tmp_path / "attack.ct"
    encrypt_to_file(attack, SECRET, PlainSlots(np.ones(SLOTS, dtype=np.int64)), layout_hash=LAYOUT,
                    round_number=1, mask=prepare_mask(SECRET, SLOTS, victims_seed))
    with pytest.raises(UcadiError, match="uses victim's round seed"):
        store.add_contribution("fed", 1, "attacker", iter_file_chunks(attack),
                               other_sites=["attacker", "victim"])
    assert store.status("fed", 1).sites == ()
    own = tmp_path / "own.ct"
    encrypt_to_file(own, SECRET, PlainSlots(np.ones(SLOTS, dtype=np.int64)), layout_hash=LAYOUT,
                    round_number=1, mask=prepare_mask(SECRET, SLOTS, victims_seed))
    store.add_contribution("fed", 1, "victim", iter_file_chunks(own),
                           other_sites=["attacker", "victim"])
    assert store.status("fed", 1).sites == ("victim",)


def test_work_per_contribution_does_not_grow_with_the_round(tmp_path: Path, monkeypatch):
    """Issue 25: adding a contribution reads the round's row and the site's, not every
    contribution so far, and derives the other sites' round seeds once per round, not once per
    contribution (1,000 sites made both O(N^2) per round)."""
    import services.crypto.sumstore as sumstore

    derived: list[str] = []
    real_round_seed = sumstore.round_seed
    monkeypatch.setattr(sumstore, "round_seed", lambda key, fed, rnd, site: (
        derived.append(site), real_round_seed(key, fed, rnd, site))[1])
    store = SumStore(tmp_path / "state")
    store.open_round(_spec())
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    sites = [f"site{k}" for k in range(6)]
    others = [*sites, *(f"idle{k}" for k in range(40))]
    receipts = []
    for k, site in enumerate(sites):
        statements.clear()
        receipts.append(store.add_contribution("fed", 1, site, iter_file_chunks(
            _contribution(tmp_path, site, np.full(SLOTS, k))), other_sites=others)[0])
        reads = [s for s in statements if "FROM contributions" in s and "AND site = '" not in s
                 and "COUNT(*)" not in s]
        assert reads == [], f"contribution {k} read every contribution of the round: {reads}"
    assert receipts == [1, 2, 3, 4, 5, 6]
    assert sorted(derived) == sorted(others)  # each site's seed once, for all six
    store._db.set_trace_callback(None)
    # The cache still refuses another site's round seed.
    from ucadi.lwe.prepared import prepare_mask

    encrypt_to_file(tmp_path / "foreign.ct", SECRET, PlainSlots(np.zeros(SLOTS, dtype=np.int64)),
                    layout_hash=LAYOUT, round_number=1, mask=prepare_mask(
                        SECRET, SLOTS, real_round_seed(SECRET.key_id, "fed", 1, "idle3")))
    with pytest.raises(UcadiError, match="idle3's round seed"):
        store.add_contribution("fed", 1, "idle5", iter_file_chunks(tmp_path / "foreign.ct"),
                               other_sites=others)
    sealed = store.seal("fed", 1)
    # Every site fetches the sum: answered without reading the round's contributions.
    statements.clear()
    store._db.set_trace_callback(statements.append)
    fetched = store.fetch("fed", 1)
    store._db.set_trace_callback(None)
    assert statements and not [s for s in statements if "FROM contributions" in s], statements
    chunks = b"".join(c.data for c in fetched.chunks(1 << 20))
    assert fetched.size_and_digest() == sealed.size_and_digest()
    (tmp_path / "sum.ct").write_bytes(chunks)
    assert np.array_equal(decrypt_file(SECRET, tmp_path / "sum.ct"),
                          np.full(SLOTS, sum(range(6))))
    store.close()
