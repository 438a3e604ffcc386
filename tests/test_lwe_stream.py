"""Ciphertext files: block-wise encrypt/sum/decrypt, bounded memory, sharding, corruption."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from ucadi.lwe import (
    CiphertextFormatError,
    CiphertextMismatchError,
    EncodingError,
    FixedPointCodec,
    PlainSlots,
    encode_update,
    generate_secret_key,
)
from ucadi.lwe.integrity import encode_site_update
from ucadi.lwe.prepared import prepare_mask
from ucadi.lwe.scheme import BATCH_BLOCKS
from ucadi.lwe.stream import (
    decrypt_fedavg_file,
    decrypt_file,
    encrypt_to_file,
    extract_blocks,
    merge_shards,
    open_verified,
    shard_ranges,
    sum_files,
)
from ucadi.wire.chunks import iter_file_chunks, receive

LAYOUT = hashlib.sha256(b"stream-layout").digest()
SECRET = generate_secret_key()
CODEC = FixedPointCodec.for_parameters(SECRET.params)


def _site_files(tmp_path: Path, length: int, weights: list[int]) -> tuple[list[Path], np.ndarray]:
    rng = np.random.default_rng(5)
    paths, vectors = [], []
    for index, weight in enumerate(weights):
        vector = rng.uniform(-4, 4, length).astype(np.float32)
        path = tmp_path / f"site{index}.ct"
        encrypt_to_file(path, SECRET, encode_site_update(vector, weight, CODEC, SECRET, 4,
                                                         f"site{index}"),
                        layout_hash=LAYOUT, round_number=4)
        paths.append(path)
        vectors.append(weight * vector.astype(np.float64))
    return paths, np.sum(vectors, axis=0) / sum(weights)


def test_files_summed_block_by_block_decrypt_to_the_fedavg(tmp_path: Path) -> None:
    paths, expected = _site_files(tmp_path, 150_001, [10, 20, 30])
    sum_files(paths, tmp_path / "sum.ct")
    average, weight = decrypt_fedavg_file(SECRET, tmp_path / "sum.ct", CODEC)
    assert weight == 60
    assert np.abs(average - expected).max() <= CODEC.resolution + 1e-6  # + float32 output


def test_two_shards_summed_separately_merge_into_the_same_sum(tmp_path: Path) -> None:
    paths, _ = _site_files(tmp_path, 100_000, [1, 2, 3, 4])
    sum_files(paths, tmp_path / "whole.ct")
    header = open_verified(paths[0]).header
    partial_sums = []
    for shard, (start, stop) in enumerate(shard_ranges(header.total_blocks, 2)):
        parts = [extract_blocks(p, start, stop, tmp_path / f"{p.stem}.{shard}") for p in paths]
        partial_sums.append(tmp_path / f"sum.{shard}")
        sum_files(parts, partial_sums[-1])
    merge_shards(partial_sums[::-1], tmp_path / "merged.ct")
    assert (tmp_path / "merged.ct").read_bytes() == (tmp_path / "whole.ct").read_bytes()


def test_shards_with_a_gap_do_not_merge(tmp_path: Path) -> None:
    paths, _ = _site_files(tmp_path, 50_000, [1])
    total = open_verified(paths[0]).header.total_blocks
    first = extract_blocks(paths[0], 0, 3, tmp_path / "a")
    last = extract_blocks(paths[0], 5, total, tmp_path / "b")
    with pytest.raises(CiphertextMismatchError, match="contiguous"):
        merge_shards([first, last], tmp_path / "m")


def test_encrypting_a_large_vector_to_a_file_uses_bounded_memory(tmp_path: Path) -> None:
    values = np.random.default_rng(1).uniform(-1, 1, 4_000_000).astype(np.float32)
    update = encode_update(values, 1, CODEC, SECRET.params)
    tracemalloc.start()
    encrypt_to_file(tmp_path / "big.ct", SECRET, update, layout_hash=LAYOUT, round_number=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # A few batches of FFT temporaries, independent of the vector length (here 26 MB of body).
    batch_budget = 160 * BATCH_BLOCKS * SECRET.params.ring_degree
    assert peak < batch_budget < values.size * SECRET.params.contribution_bits / 8 / 2, (
        f"peak {peak / 2**20:.1f} MiB")


def test_truncated_or_tampered_files_are_rejected_before_use(tmp_path: Path) -> None:
    path = tmp_path / "c.ct"
    encrypt_to_file(path, SECRET, PlainSlots(np.arange(9000)), layout_hash=LAYOUT, round_number=1)
    data = path.read_bytes()
    (tmp_path / "short.ct").write_bytes(data[:-100])
    other = tmp_path / "other.ct"
    encrypt_to_file(other, SECRET, PlainSlots(np.arange(9000)), layout_hash=LAYOUT, round_number=1)
    tampered = bytearray(other.read_bytes())
    tampered[5000] ^= 0x40
    (tmp_path / "bad.ct").write_bytes(bytes(tampered))
    with pytest.raises(CiphertextFormatError, match="truncated"):
        decrypt_file(SECRET, tmp_path / "short.ct")
    with pytest.raises(CiphertextFormatError, match="digest"):
        decrypt_file(SECRET, tmp_path / "bad.ct")
    with pytest.raises(CiphertextFormatError, match="digest"):
        sum_files([path, tmp_path / "bad.ct"], tmp_path / "out.ct")
    assert not (tmp_path / "out.ct").exists()


def test_a_sum_tampered_at_rest_is_refused_unless_its_download_already_checked_it(
        tmp_path: Path) -> None:
    paths, _ = _site_files(tmp_path, 9000, [1, 2])
    sum_files(paths, tmp_path / "sum.ct")
    tampered = bytearray((tmp_path / "sum.ct").read_bytes())
    tampered[5000] ^= 0x40  # on the server's disk: its transfer digest is computed afterwards
    (tmp_path / "bad.ct").write_bytes(bytes(tampered))
    for name, intact in (("sum.ct", True), ("bad.ct", False)):
        receiver = receive(iter_file_chunks(tmp_path / name), tmp_path / f"got-{name}", 1 << 30)
        assert receiver.trailer_ok is intact  # the transfer itself succeeds either way
    with pytest.raises(CiphertextFormatError, match="digest"):
        decrypt_fedavg_file(SECRET, tmp_path / "got-bad.ct", CODEC,
                            verify_digest=not receiver.trailer_ok)
    checked, _ = decrypt_fedavg_file(SECRET, tmp_path / "got-sum.ct", CODEC, verify_digest=False)
    assert np.array_equal(checked, decrypt_fedavg_file(SECRET, tmp_path / "sum.ct", CODEC)[0])


def test_files_of_different_rounds_are_not_summed(tmp_path: Path) -> None:
    for round_number in (1, 2):
        encrypt_to_file(tmp_path / f"r{round_number}", SECRET, PlainSlots(np.arange(10)),
                        layout_hash=LAYOUT, round_number=round_number)
    with pytest.raises(CiphertextMismatchError, match="round_number"):
        sum_files([tmp_path / "r1", tmp_path / "r2"], tmp_path / "out")


def test_a_prepared_mask_encrypts_once_and_decrypts_like_a_fresh_encryption(tmp_path: Path):
    length = 2 * SECRET.params.ring_degree * BATCH_BLOCKS + 77  # spans batches, last partial
    plain = np.random.default_rng(9).integers(-2**20, 2**20, length)
    mask = prepare_mask(SECRET, length)
    encrypt_to_file(tmp_path / "masked.ct", SECRET, PlainSlots(plain), layout_hash=LAYOUT,
                    round_number=1, mask=mask)
    encrypt_to_file(tmp_path / "fresh.ct", SECRET, PlainSlots(plain), layout_hash=LAYOUT,
                    round_number=1)
    assert open_verified(tmp_path / "masked.ct").seeds == (mask.seed,)
    total = sum_files([tmp_path / "masked.ct", tmp_path / "fresh.ct"], tmp_path / "sum.ct")
    assert total.contributors == 2
    assert np.array_equal(decrypt_file(SECRET, tmp_path / "sum.ct"), 2 * plain)
    with pytest.raises(EncodingError, match="already used"):
        encrypt_to_file(tmp_path / "again.ct", SECRET, PlainSlots(plain), layout_hash=LAYOUT,
                        round_number=2, mask=mask)


def test_a_mask_for_another_size_or_key_is_refused(tmp_path: Path):
    plain = PlainSlots(np.arange(100))
    for mask in (prepare_mask(SECRET, 99), prepare_mask(generate_secret_key(), 100)):
        with pytest.raises(EncodingError, match="cannot encrypt"):
            encrypt_to_file(tmp_path / "x.ct", SECRET, plain, layout_hash=LAYOUT,
                            round_number=1, mask=mask)
        assert not mask.used
