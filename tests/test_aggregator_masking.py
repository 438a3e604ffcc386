"""The aggregator's side of pairwise masks (services/aggregator/masking.py), in-process with
real SQLite, real ciphertexts and a settable clock: the key set and the participants are fixed
by their deadlines, stragglers and late joiners are left out and not waited for, answers must
match the announced sets, and the sealed sum less the masks the aggregator serves decrypts to
the participants' FedAvg."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from masking_identities import Identities
from test_aggregator_rounds import LAYOUT, VALUES, Clock, coordinator

from services.aggregator.contracts import SEALED, UNMASKING, RejectedUpload
from services.aggregator.masking import MaskPhaseError
from ucadi.lwe import FixedPointCodec, fedavg, generate_secret_key
from ucadi.lwe.integrity import encode_site_update
from ucadi.lwe.masking import (
    MaskingRound,
    SitePairing,
    answer_unmasking,
    apply_mask_terms,
    generate_round_keys,
)
from ucadi.lwe.shamir import share_to_bytes
from ucadi.lwe.stream import decrypt_fedavg_file, encrypt_to_file
from ucadi.wire import file_digest

PHASE_S = 30.0
IDENTITIES = Identities()


@pytest.fixture(scope="module")
def secret():
    return generate_secret_key()


def test_masked_round_fixes_its_sets_by_deadline_and_seals_to_the_participants_fedavg(
        tmp_path, secret):
    clock = Clock()
    coord = coordinator(tmp_path / "agg", secret, clock, pairwise_masks=True,
                        mask_phase_timeout_s=PHASE_S)
    masks = coord.masks
    for site in ("a", "b", "c"):
        coord.join(site, 5)
    coord.step()
    keys = {site: generate_round_keys() for site in ("a", "b", "c")}
    for site in ("a", "b"):  # c never advertises
        public = IDENTITIES.advertise(site, keys[site])
        masks.advertise(site, 1, public.share_public, public.mask_public, public.identity)
    coord.step()
    assert masks.keys(1)[0].key_set is None, "waits for c until the key phase's deadline"
    clock.now += PHASE_S
    coord.step()
    record, advertised = masks.keys(1)
    assert record.key_set == ["a", "b"] and record.threshold == 2
    late = IDENTITIES.advertise("c", keys["c"])
    with pytest.raises(MaskPhaseError, match="fixed without c"):
        masks.advertise("c", 1, late.share_public, late.mask_public, late.identity)
    coord.join("d", 5)  # a late joiner cannot take part: it is not waited for
    assert "d" not in coord.view().expected

    context = MaskingRound("test-fed", secret.key_id, 1, ("a", "b"), 2)
    pairings = {s: IDENTITIES.pairing(context, s, keys[s], advertised) for s in ("a", "b")}
    with pytest.raises(MaskPhaseError, match="exactly the key set"):
        masks.give_shares("a", 1, {"a": b"x"})
    for site, pairing in pairings.items():
        masks.give_shares(site, 1, pairing.share_messages())
    assert coord.view().expected == ["a", "b"]
    participants, sealed = masks.shares_for("a", 1)
    assert participants == ["a", "b"] and set(sealed) == {"a", "b"}

    rng = np.random.default_rng(1)
    models = {"a": rng.normal(0, 0.5, VALUES), "b": rng.normal(0, 0.5, VALUES)}
    with pytest.raises(RejectedUpload, match="not one of its participants"):
        _upload(coord, secret, tmp_path, "c", models["a"], None)
    for site in ("a", "b"):
        _upload(coord, secret, tmp_path, site, models[site], pairings[site])
    coord.step()
    view = coord.view()
    assert view.state == UNMASKING and view.survivors == ["a", "b"] and view.dropped == []

    for site in ("a", "b"):
        received = pairings[site].open_all(masks.shares_for(site, 1)[1])
        answer = answer_unmasking(context, site, received, ["a", "b"], [])
        seeds = {o: share_to_bytes(v) for o, v in answer.self_seeds.items()}
        with pytest.raises(MaskPhaseError, match="exactly the survivors"):
            masks.answer(site, 1, {"a": seeds["a"]}, {})
        masks.answer(site, 1, seeds, {})
    coord.step()
    assert coord.view().latest_version == 1
    assert coord.store.rounds()[0].state == SEALED
    assert_sealed_fedavg(coord, secret, models, ("a", "b"))


def assert_sealed_fedavg(coord, secret, models: dict, sites) -> None:
    """Global version 1, less the masks the aggregator serves, decrypts to the FedAvg of the
    `sites`' updates (weight 5 each)."""
    codec = FixedPointCodec.for_parameters(secret.params)
    path, _, _ = coord.store.version(1)
    negated = [(seed, -sign) for seed, sign in coord.masks.terms(1)]
    average, total = decrypt_fedavg_file(
        secret, path, codec, unmask=lambda b, first: apply_mask_terms(b, first, negated,
                                                                      secret.params))
    plain = [encode_site_update(models[s], 5, codec, secret, 1, s).slots(0, VALUES + 1)
             for s in sites]
    assert total == 5 * len(sites)
    assert np.array_equal(average, fedavg(np.sum(plain, axis=0), codec).astype(np.float32))


def _upload(coord, secret, tmp_path, site: str, values: np.ndarray,
            pairing: SitePairing | None, participants=("a", "b")):
    codec = FixedPointCodec.for_parameters(secret.params)
    path = tmp_path / "sites" / f"{site}.lwe"
    path.parent.mkdir(parents=True, exist_ok=True)
    terms = pairing.mask_terms(participants) if pairing is not None else []
    encrypt_to_file(path, secret, encode_site_update(values, 5, codec, secret, 1, site),
                    layout_hash=bytes.fromhex(LAYOUT), round_number=1,
                    pairwise=lambda batch, first: apply_mask_terms(batch, first, terms,
                                                                   secret.params))
    header = SimpleNamespace(round=1, base_version=0, parameter_set=secret.params.name,
                             key_id=secret.key_id_hex, layout_hash=LAYOUT,
                             total_size=path.stat().st_size, sha256=file_digest(path),
                             num_samples=5, local_epochs=1, optimizer_digest="")
    partial = coord.check_upload(site, header)
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(path.read_bytes())
    return coord.accept_upload(site, header, partial)


def test_a_phase_deadline_does_not_leave_the_round_below_its_quorum(tmp_path, secret):
    # min_sites 3 of 3 (the demo's quorum: every site): a site slow to start advertises after
    # the key phase's deadline, and shares after the share phase's. Leaving it out would leave
    # two sites that may upload against a quorum of three: the round could never seal.
    clock = Clock()
    coord = coordinator(tmp_path / "agg", secret, clock, pairwise_masks=True,
                        mask_phase_timeout_s=PHASE_S, min_sites=3)
    masks, sites = coord.masks, ("a", "b", "c")
    for site in sites:
        coord.join(site, 5)
    coord.step()
    keys = {site: generate_round_keys() for site in sites}
    public = {site: IDENTITIES.advertise(site, keys[site]) for site in sites}
    for site in ("a", "b"):
        masks.advertise(site, 1, public[site].share_public, public[site].mask_public,
                        public[site].identity)
    clock.now += 3 * PHASE_S
    coord.step()
    assert masks.keys(1)[0].key_set is None, "two of a quorum of three: waits for c"
    masks.advertise("c", 1, public["c"].share_public, public["c"].mask_public,
                    public["c"].identity)
    record, advertised = masks.keys(1)
    assert record.key_set == list(sites)
    context = MaskingRound("test-fed", secret.key_id, 1, sites, record.threshold)
    for site in ("a", "b"):
        masks.give_shares(site, 1, IDENTITIES.pairing(context, site, keys[site], advertised)
                          .share_messages())
    clock.now += 3 * PHASE_S
    coord.step()
    assert masks.shares_for("a", 1)[0] is None, "participants wait for c too"
    masks.give_shares("c", 1, IDENTITIES.pairing(context, "c", keys["c"], advertised)
                      .share_messages())
    assert masks.shares_for("a", 1)[0] == list(sites)
    assert coord.view().expected == list(sites)


def test_a_masked_round_waiting_for_keys_does_not_spin_the_round_loop(tmp_path, secret):
    # The loop steps on a change or every 0.5 s. A masked round's step used to report a
    # change every time, so while a round collected the aggregator stepped (and woke every
    # long poll) without pause, a core's worth of CPU beside the sites' training.
    coord = coordinator(tmp_path / "agg", secret, Clock(), pairwise_masks=True)
    for site in ("a", "b", "c"):
        coord.join(site, 5)
    coord.step()
    steps, step = [], coord.machine.step

    def counted() -> None:
        steps.append(time.monotonic())
        step()
    coord.machine.step = counted
    coord.start()
    try:
        time.sleep(2.0)
    finally:
        coord.stop()
    assert 2 <= len(steps) <= 8, f"{len(steps)} steps in 2 s"


def test_phases_refuse_sites_and_rounds_outside_them(tmp_path, secret):
    coord = coordinator(tmp_path / "agg", secret, Clock(), pairwise_masks=True)
    for site in ("a", "b"):
        coord.join(site, 5)
    coord.step()
    public = IDENTITIES.advertise("a", generate_round_keys())
    identity = public.identity
    with pytest.raises(MaskPhaseError, match="not expected"):
        coord.masks.advertise("z", 1, public.share_public, public.mask_public, identity)
    with pytest.raises(MaskPhaseError, match="is not collecting"):
        coord.masks.advertise("a", 2, public.share_public, public.mask_public, identity)
    with pytest.raises(MaskPhaseError, match="32-byte"):
        coord.masks.advertise("a", 1, b"short", public.mask_public, identity)
    with pytest.raises(MaskPhaseError, match="96-byte identity"):
        coord.masks.advertise("a", 1, public.share_public, public.mask_public, b"")
    coord.masks.advertise("a", 1, public.share_public, public.mask_public, identity)
    other = IDENTITIES.advertise("a", generate_round_keys())
    with pytest.raises(MaskPhaseError) as refused:
        coord.masks.advertise("a", 1, other.share_public, other.mask_public, other.identity)
    assert refused.value.status == "ALREADY_EXISTS"
    with pytest.raises(MaskPhaseError, match="no unmasking"):
        coord.masks.terms(1)


def test_a_state_folder_from_before_identities_gains_the_column_and_keeps_its_keys(tmp_path):
    """An aggregator upgraded mid-federation opens its old SQLite: the stored round keys stay,
    with an empty identity (sites then refuse that round's key set), and new ones store theirs."""
    import sqlite3

    from services.aggregator.store import AggregatorStore

    folder = tmp_path / "agg"
    folder.mkdir()
    with sqlite3.connect(folder / "aggregator.sqlite3") as db:
        db.execute("CREATE TABLE mask_keys (round INTEGER NOT NULL, site TEXT NOT NULL, "
                   "share_public BLOB NOT NULL, mask_public BLOB NOT NULL, "
                   "PRIMARY KEY (round, site))")
        db.execute("INSERT INTO mask_keys VALUES (1, 'a', ?, ?)", (b"s" * 32, b"m" * 32))
    store = AggregatorStore(folder)
    try:
        assert store.mask_keys(1) == {"a": (b"s" * 32, b"m" * 32, b"")}
        identity = IDENTITIES.identity("b").to_bytes()
        assert store.put_mask_keys(1, "b", b"t" * 32, b"n" * 32, identity)[2] == identity
    finally:
        store.close()
