"""The aggregator's round state machine, in-process, with real ciphertexts and real SQLite."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from services.aggregator import copies
from services.aggregator.contracts import (
    COLLECTING,
    COMPLETED,
    FederationConfig,
    FederationStateError,
    RejectedUpload,
)
from services.aggregator.coordinator import RoundCoordinator
from services.aggregator.local_backend import LocalSumBackend, read_facts
from services.aggregator.store import AggregatorStore
from ucadi.errors import UcadiError
from ucadi.lwe import FixedPointCodec, generate_secret_key
from ucadi.lwe.integrity import encode_site_update
from ucadi.lwe.stream import decrypt_fedavg_file, encrypt_to_file, sum_files
from ucadi.wire import file_digest, iter_file_chunks

VALUES = 5000
LAYOUT = "ab" * 32


class Clock:
    """A settable clock so deadlines pass without sleeping."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def secret():
    return generate_secret_key()


def make_config(secret, **overrides) -> FederationConfig:
    base = dict(federation_id="test-fed", min_sites=2, total_rounds=2, local_epochs=1,
                round_timeout_s=100.0, liveness_timeout_s=1e9,
                model={"arch": "densenet3d", "preset": "cpu-small", "task": "binary",
                       "init_seed": 0, "recipe_json": "{}", "layout_hash": LAYOUT,
                       "value_count": VALUES, "optimizer_json": "", "optimizer_digest": ""},
                encryption={"enabled": True, "parameter_set": secret.params.name,
                            "key_id": secret.key_id_hex})
    base.update(overrides)
    return FederationConfig(**base)


def coordinator(tmp: Path, secret, clock: Clock, **overrides) -> RoundCoordinator:
    store = AggregatorStore(tmp)
    return RoundCoordinator(make_config(secret, **overrides), store, LocalSumBackend(store),
                            read_facts, clock=clock)


def upload(coord: RoundCoordinator, secret, tmp: Path, site: str, values: np.ndarray,
           weight: int, round_number: int = 1, base_version: int = 0):
    codec = FixedPointCodec.for_parameters(secret.params)
    path = tmp / "sites" / f"{site}-r{round_number}.lwe"
    path.parent.mkdir(parents=True, exist_ok=True)
    encrypt_to_file(path, secret, encode_site_update(values, weight, codec, secret, round_number,
                                                     site),
                    layout_hash=bytes.fromhex(LAYOUT), round_number=round_number)
    header = SimpleNamespace(round=round_number, base_version=base_version,
                             parameter_set=secret.params.name, key_id=secret.key_id_hex,
                             layout_hash=LAYOUT, total_size=path.stat().st_size,
                             sha256=file_digest(path), num_samples=weight, local_epochs=1,
                             optimizer_digest="")
    partial = coord.check_upload(site, header)
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(path.read_bytes())
    return coord.accept_upload(site, header, partial)


def seal_first_round(coord: RoundCoordinator, secret, tmp: Path, values: np.ndarray) -> None:
    """Sites a and b join, round 1 opens, both upload `values` (weight 5) and it seals."""
    for site in ("a", "b"):
        coord.join(site, 5)
    coord.step()
    for site in ("a", "b"):
        upload(coord, secret, tmp, site, values, 5)
    coord.step()


def test_round_seals_when_all_expected_sites_uploaded_and_decrypts_to_weighted_fedavg(
        tmp_path, secret):
    clock = Clock()
    coord = coordinator(tmp_path / "agg", secret, clock)
    rng = np.random.default_rng(0)
    models = {"a": rng.normal(0, 1, VALUES), "b": rng.normal(0, 1, VALUES)}
    weights = {"a": 30, "b": 10}
    for site in models:
        coord.join(site, 10)
    coord.step()
    assert coord.view().round == 1 and coord.view().state == COLLECTING
    for site in models:
        upload(coord, secret, tmp_path, site, models[site], weights[site])
    coord.step()
    assert coord.view().latest_version == 1
    assert coord.view().round == 2
    codec = FixedPointCodec.for_parameters(secret.params)
    average, total = decrypt_fedavg_file(secret, coord.store.global_path(1), codec)
    expected = (30 * models["a"] + 10 * models["b"]) / 40
    assert total == 40
    assert np.max(np.abs(average - expected)) <= codec.resolution + 1e-6


class AddedOnlyBackend(LocalSumBackend):
    """Seals only what was fed to it, as the crypto service does; `during_add` runs inside the
    first add (an upload arriving while the aggregator feeds another)."""

    def __init__(self, store: AggregatorStore, during_add) -> None:
        super().__init__(store)
        self.added: list[Path] = []
        self.during_add = during_add

    def add(self, round_number: int, site: str, path: Path, streamed=None, sha256="") -> None:
        self.added.append(path)
        hook, self.during_add = self.during_add, None
        if hook is not None:
            hook()

    def seal(self, round_number: int, out_path: Path, sites=()) -> None:
        sum_files(self.added, out_path)


def test_an_upload_accepted_while_another_is_fed_is_summed_before_the_seal(tmp_path, secret):
    store = AggregatorStore(tmp_path / "agg")
    rng = np.random.default_rng(3)
    models = {"a": rng.normal(0, 1, VALUES), "b": rng.normal(0, 1, VALUES)}
    backend = AddedOnlyBackend(store, lambda: upload(coord, secret, tmp_path, "b",
                                                     models["b"], 10))
    coord = RoundCoordinator(make_config(secret), store, backend, read_facts, clock=Clock())
    for site in models:
        coord.join(site, 10)
    coord.step()
    upload(coord, secret, tmp_path, "a", models["a"], 30)
    coord.step()  # feeds a; b arrives meanwhile; both are expected, so the round seals
    assert coord.view().latest_version == 1
    codec = FixedPointCodec.for_parameters(secret.params)
    average, total = decrypt_fedavg_file(secret, store.global_path(1), codec)
    assert total == 40
    assert np.max(np.abs(average - (30 * models["a"] + 10 * models["b"]) / 40)) \
        <= codec.resolution + 1e-6


def test_late_upload_to_a_closed_round_is_refused_with_failed_precondition(tmp_path, secret):
    clock = Clock()
    coord = coordinator(tmp_path / "agg", secret, clock)
    seal_first_round(coord, secret, tmp_path, np.zeros(VALUES))
    with pytest.raises(RejectedUpload) as refused:
        upload(coord, secret, tmp_path, "a", np.ones(VALUES), 5, round_number=1)
    assert refused.value.status == "FAILED_PRECONDITION"
    assert "not open" in str(refused.value)


def test_duplicate_and_mismatched_uploads_are_rejected_and_the_round_goes_on(tmp_path, secret):
    clock = Clock()
    coord = coordinator(tmp_path / "agg", secret, clock)
    for site in ("a", "b"):
        coord.join(site, 5)
    coord.step()
    upload(coord, secret, tmp_path, "a", np.zeros(VALUES), 5)
    with pytest.raises(RejectedUpload) as duplicate:
        upload(coord, secret, tmp_path, "a", np.zeros(VALUES), 5)
    assert duplicate.value.status == "ALREADY_EXISTS"
    other = generate_secret_key()
    with pytest.raises(RejectedUpload) as wrong_key:
        upload(coord, other, tmp_path, "b", np.zeros(VALUES), 5)
    assert "key id" in str(wrong_key.value)
    upload(coord, secret, tmp_path, "b", np.ones(VALUES), 5)
    coord.step()
    assert coord.view().latest_version == 1


def test_deadline_seals_with_quorum_and_drops_the_straggler(tmp_path, secret):
    clock = Clock()
    coord = coordinator(tmp_path / "agg", secret, clock)
    for site in ("a", "b", "c"):
        coord.join(site, 5)
    coord.step()
    upload(coord, secret, tmp_path, "a", np.zeros(VALUES), 5)
    upload(coord, secret, tmp_path, "b", np.zeros(VALUES), 5)
    coord.step()
    assert coord.view().latest_version == 0, "waits for c until the deadline"
    clock.now += 101
    coord.step()
    assert coord.view().latest_version == 1
    assert coord.store.rounds()[0].expected == ["a", "b"]


def test_deadline_without_quorum_extends_the_round(tmp_path, secret, caplog):
    clock = Clock()
    coord = coordinator(tmp_path / "agg", secret, clock)
    for site in ("a", "b"):
        coord.join(site, 5)
    coord.step()
    upload(coord, secret, tmp_path, "a", np.zeros(VALUES), 5)
    clock.now += 101
    coord.step()
    view = coord.view()
    assert view.state == COLLECTING and view.latest_version == 0
    assert view.deadline > clock.now
    # The new deadline as a person reads it (1,201 s after the epoch), not a raw epoch number.
    assert "1 of 2 required uploads; extended by 100 s to 1970-01-01 00:20:01 UTC" in caplog.text


def test_restart_continues_the_same_round_without_losing_or_double_counting(tmp_path, secret):
    clock = Clock()
    state = tmp_path / "agg"
    coord = coordinator(state, secret, clock)
    for site in ("a", "b"):
        coord.join(site, 5)
    coord.step()
    upload(coord, secret, tmp_path, "a", np.full(VALUES, 0.5), 5)
    coord.step()
    coord.store.close()
    restarted = coordinator(state, secret, clock)
    assert restarted.view().round == 1 and restarted.view().uploaded == ["a"]
    with pytest.raises(RejectedUpload):
        upload(restarted, secret, tmp_path, "a", np.full(VALUES, 0.5), 5)
    upload(restarted, secret, tmp_path, "b", np.full(VALUES, 1.5), 5)
    restarted.step()
    codec = FixedPointCodec.for_parameters(secret.params)
    average, total = decrypt_fedavg_file(secret, restarted.store.global_path(1), codec)
    assert total == 10
    assert np.allclose(average, 1.0, atol=codec.resolution)


def test_federation_completes_after_total_rounds(tmp_path, secret):
    clock = Clock()
    coord = coordinator(tmp_path / "agg", secret, clock, total_rounds=1)
    seal_first_round(coord, secret, tmp_path, np.zeros(VALUES))
    assert coord.view().state == COMPLETED


def test_unjoined_site_cannot_upload(tmp_path, secret):
    coord = coordinator(tmp_path / "agg", secret, Clock())
    with pytest.raises(FederationStateError):
        coord.check_upload("stranger", SimpleNamespace(round=1))


def test_a_sum_passed_off_as_one_sites_update_is_rejected_as_malformed(tmp_path, secret):
    clock = Clock()
    coord = coordinator(tmp_path / "agg", secret, clock)
    coord.join("a", 10)
    coord.join("b", 10)
    coord.step()
    codec = FixedPointCodec.for_parameters(secret.params)
    parts = []
    for site in ("x", "y"):
        parts.append(tmp_path / f"{site}.lwe")
        encrypt_to_file(parts[-1], secret, encode_site_update(np.ones(VALUES), 1, codec,
                                                              secret, 1, site),
                        layout_hash=bytes.fromhex(LAYOUT), round_number=1)
    total = sum_files(parts, tmp_path / "sum.lwe")  # rounded to 44 bits, two contributors
    assert total.dropped_bits == secret.params.sum_drop_bits
    header = SimpleNamespace(round=1, base_version=0, parameter_set=secret.params.name,
                             key_id=secret.key_id_hex, layout_hash=LAYOUT,
                             total_size=(tmp_path / "sum.lwe").stat().st_size,
                             sha256=file_digest(tmp_path / "sum.lwe"), num_samples=1,
                             local_epochs=1, optimizer_digest="")
    partial = coord.check_upload("a", header)
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes((tmp_path / "sum.lwe").read_bytes())
    with pytest.raises(RejectedUpload, match="malformed ciphertext: .*not a sum of 2"):
        coord.accept_upload("a", header, partial)
    assert coord.store.uploads(1) == []


class HeldAtSumBackend(LocalSumBackend):
    """Keeps each sealed sum on its own side, as the sum service does when sites fetch there:
    the aggregator gets only its size and digest; `copy_fails` copies fail first."""

    def __init__(self, store: AggregatorStore, held: Path, copy_fails: int = 0) -> None:
        super().__init__(store)
        self.held = held
        self.copy_fails = copy_fails

    def close_round(self, round_number: int, sites) -> tuple[int, str]:
        path = self.held / f"sum-{round_number}.lwe"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.seal(round_number, path, sites)
        return path.stat().st_size, file_digest(path)

    def copy_sum(self, round_number: int, out_path: Path, size: int, sha256: str) -> None:
        if self.copy_fails:
            self.copy_fails -= 1
            raise UcadiError("sum service unavailable")
        out_path.write_bytes((self.held / f"sum-{round_number}.lwe").read_bytes())

    def sum_chunks(self, round_number: int, offset: int):
        return iter_file_chunks(self.held / f"sum-{round_number}.lwe", offset=offset)


@pytest.mark.parametrize("copy", [False, True])
def test_a_version_sealed_at_the_sum_service_is_served_from_there_or_copied_in_the_background(
        tmp_path, secret, monkeypatch, copy):
    monkeypatch.setattr(copies, "RETRY_AFTER_S", 0.0)
    store = AggregatorStore(tmp_path / "agg")
    backend = HeldAtSumBackend(store, tmp_path / "sum-service", copy_fails=1)
    coord = RoundCoordinator(make_config(secret), store, backend, read_facts, clock=Clock(),
                             copy_global_versions=copy)
    seal_first_round(coord, secret, tmp_path, np.ones(VALUES))
    assert coord.view().latest_version == 1
    held = (tmp_path / "sum-service" / "sum-1.lwe").read_bytes()
    path, size, digest = store.version(1)
    assert (size, digest) == (len(held), file_digest(tmp_path / "sum-service" / "sum-1.lwe"))
    if not copy:
        assert path is None and store.versions_not_copied() == [(1, size, digest)]
        coord.step()
        assert store.version(1)[0] is None, "no copy unless configured"
        return
    deadline = time.monotonic() + 30  # the first copy fails; a later pass copies it
    while store.version(1)[0] is None and time.monotonic() < deadline:
        time.sleep(0.05)
        coord.step()
    assert store.version(1)[0].read_bytes() == held
    assert store.versions_not_copied() == []
    coord.stop()


class UnopenableBackend(LocalSumBackend):
    """A sum service that is away when the rounds are opened."""

    def open_round(self, round_number: int) -> None:
        raise UcadiError("crypto service: UNAVAILABLE: connection refused")


def test_a_round_still_opens_while_the_sum_service_is_away(tmp_path, secret, caplog):
    store = AggregatorStore(tmp_path / "agg")
    coord = RoundCoordinator(make_config(secret), store, UnopenableBackend(store), read_facts,
                             clock=Clock())
    for site in ("a", "b"):
        coord.join(site, 5)
    coord.machine.maybe_open(1, base_version=0)
    assert coord.view().round == 1 and coord.view().state == COLLECTING
    for site in ("a", "b"):
        upload(coord, secret, tmp_path, site, np.ones(VALUES), 5)
    coord.machine.seal(store.latest_round())  # sealing round 1 announces round 2 all the same
    assert coord.view().round == 2 and coord.view().state == COLLECTING
    # Round 1, round 2 ahead of time, round 2 again at the seal (the last round: none ahead).
    assert caplog.text.count("the sum service did not open it yet") == 3


class OpenRecordingBackend(LocalSumBackend):
    """Records when each round is opened at the sum service, against the rounds announced."""

    def __init__(self, store: AggregatorStore) -> None:
        super().__init__(store)
        self.opened: list[tuple[int, int]] = []  # (round opened, latest round announced then)

    def open_round(self, round_number: int) -> None:
        latest = self.store.latest_round()
        self.opened.append((round_number, latest.round if latest else 0))


def test_the_next_round_is_opened_at_the_sum_service_before_this_one_seals(tmp_path, secret):
    store = AggregatorStore(tmp_path / "agg")
    backend = OpenRecordingBackend(store)
    coord = RoundCoordinator(make_config(secret, total_rounds=3), store, backend, read_facts,
                             clock=Clock())
    for site in ("a", "b"):
        coord.join(site, 5)
    coord.machine.maybe_open(1, base_version=0)
    assert (2, 1) in backend.opened  # round 2 is open there while round 1 collects
    for site in ("a", "b"):
        upload(coord, secret, tmp_path, site, np.ones(VALUES), 5)
    coord.machine.seal(store.latest_round())
    assert (3, 2) in backend.opened
    for number in (2, 3):
        for site in ("a", "b"):
            upload(coord, secret, tmp_path, site, np.ones(VALUES), 5, number, number - 1)
        coord.machine.seal(store.latest_round())
    assert coord.view().state == COMPLETED
    assert max(number for number, _ in backend.opened) == 3  # nothing past the last round


class RunAtOnce:
    """An executor whose work is done before `submit` returns: a feed that finishes at once
    (a backend whose add is a no-op)."""

    def submit(self, fn, *args):
        future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - carried by the future, as an executor does
            future.set_exception(exc)
        return future

    def shutdown(self, **_options) -> None:
        pass


def test_an_upload_whose_feed_finishes_at_once_is_accepted_without_a_deadlock(tmp_path, secret):
    coord = coordinator(tmp_path / "agg", secret, Clock())
    coord.feeder._pool = RunAtOnce()
    for site in ("a", "b"):
        coord.join(site, 5)
    coord.step()
    worker = threading.Thread(target=lambda: [upload(coord, secret, tmp_path, site, np.ones(VALUES),
                                                     5) for site in ("a", "b")], daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "accepting an upload deadlocked in the feeder"
    coord.step()
    assert coord.view().latest_version == 1


def test_a_round_record_written_back_keeps_the_bytes_of_uploads_recorded_since_it_was_read(
        tmp_path, secret):
    # The round machine reads the round, an upload is recorded meanwhile (it adds its size in
    # the database), then the machine writes its record back: the upload's bytes must stay
    # (the demo's "up" column once showed 3 of 4 uploads).
    coord = coordinator(tmp_path / "agg", secret, Clock())
    for site in ("a", "b"):
        coord.join(site, 5)
    coord.step()
    stale = coord.store.latest_round()
    receipt = upload(coord, secret, tmp_path, "a", np.ones(VALUES), 5)
    coord.store.update_round(stale)
    assert coord.store.latest_round().bytes_in == receipt.size > 0
