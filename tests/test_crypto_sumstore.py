"""The sum service's store on its own: running sums in memory, durable contributions, sealing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from services.crypto.sumstore import RoundSpec, RoundStateError, SumStore
from ucadi.lwe import PlainSlots, generate_secret_key
from ucadi.lwe.errors import DuplicateContributionError
from ucadi.lwe.stream import decrypt_file, encrypt_to_file
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
