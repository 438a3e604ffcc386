"""Ciphertexts as files, block by block: encrypt to a file, sum files, decrypt a file, shard.

Memory stays bounded by a few batches of BATCH_BLOCKS blocks whatever the vector length, so a
46 M-value model is encrypted, summed and decrypted without a second whole-model copy.
Every reader checks the trailing SHA-256 before trusting a body (`open_verified`), and a
writer fsyncs before returning, so a caller may acknowledge the file as durable.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ucadi.digests import hash_file, remember
from ucadi.durable import fsync_dir
from ucadi.lwe.codec import FixedPointCodec, average_scale, decode_average_into
from ucadi.lwe.errors import CiphertextFormatError, CiphertextMismatchError, EncodingError
from ucadi.lwe.integrity import TAG_SLOTS, SumCheck
from ucadi.lwe.keys import SecretKey
from ucadi.lwe.prepared import DecryptionProduct, EncryptionMask
from ucadi.lwe.sampling import fresh_seed
from ucadi.lwe.scheme import (
    BATCH_BLOCKS,
    Ciphertext,
    CiphertextHeader,
    SlotSource,
    add_bodies,
    iter_decrypted_batches,
    iter_encrypted_batches,
    merged_seeds,
    new_header,
)
from ucadi.lwe.serialization import (
    HEADER,
    body_size,
    decode_fixed_header,
    encode_header,
    pack_coefficients,
    seeds_size,
    serialized_size,
    split_seeds,
    unpack_coefficients,
)


@dataclass(frozen=True)
class CiphertextFile:
    """A verified ciphertext file: its header, seeds and where its body starts."""

    path: Path
    header: CiphertextHeader
    seeds: tuple[bytes, ...]

    @property
    def body_offset(self) -> int:
        """Byte offset of the first body coefficient."""
        return HEADER.size + seeds_size(self.header)

    def iter_body_batches(self, block_start: int | None = None,
                          block_stop: int | None = None) -> Iterator[np.ndarray]:
        """Body coefficients (uint64) of a block sub-range, BATCH_BLOCKS blocks at a time."""
        header, params = self.header, self.header.params
        start = header.block_start if block_start is None else block_start
        stop = header.block_stop if block_stop is None else block_stop
        if not header.block_start <= start < stop <= header.block_stop:
            raise CiphertextMismatchError(
                f"block range [{start}, {stop}) is outside this ciphertext's "
                f"[{header.block_start}, {header.block_stop})")
        n = params.ring_degree
        first_slot = header.block_start * n
        with open(self.path, "rb") as handle:
            for first in range(start, stop, BATCH_BLOCKS):
                slot_a = first * n
                slot_b = min((min(first + BATCH_BLOCKS, stop)) * n, header.slot_count)
                # Whole blocks (an even number of slots) start on a whole byte.
                handle.seek(self.body_offset + body_size(header, slot_a - first_slot))
                size = body_size(header, slot_b - slot_a)
                data = handle.read(size)
                if len(data) != size:
                    raise CiphertextFormatError(f"{self.path} was truncated while reading")
                yield unpack_coefficients(data, header)

    def iter_verified_batches(self) -> Iterator[np.ndarray]:
        """The whole body, batch by batch, hashing as it reads; raises CiphertextFormatError
        after the last batch if the trailing digest does not match (so a consumer that only
        commits its result at the end never commits one made from a tampered file)."""
        header = self.header
        batch_bytes = body_size(header, BATCH_BLOCKS * header.params.ring_degree)
        remaining = body_size(header)
        with open(self.path, "rb") as handle:
            prefix = handle.read(self.body_offset)
            digest = hashlib.sha256(prefix)
            while remaining > 0:
                data = handle.read(min(batch_bytes, remaining))
                if not data:
                    raise CiphertextFormatError(f"{self.path} was truncated while reading")
                digest.update(data)
                remaining -= len(data)
                yield unpack_coefficients(data, header)
            if handle.read() != digest.digest():
                raise CiphertextFormatError(
                    f"{self.path.name}: digest mismatch, corrupted or tampered")

    def iter_whole_body(self, verify_digest: bool) -> Iterator[np.ndarray]:
        """The whole body, batch by batch: hashed as it is read (iter_verified_batches), or
        not, when the caller already checked the trailing digest."""
        return self.iter_verified_batches() if verify_digest else self.iter_body_batches()


def open_verified(path: Path, verify_digest: bool = True) -> CiphertextFile:
    """Parse a ciphertext file's header, check its size and (unless the caller reads it with
    `iter_verified_batches`, or has checked it as it arrived: `ChunkReceiver.trailer_ok`)
    verify its digest in one streaming pass."""
    path = Path(path)
    with open(path, "rb") as handle:
        header = decode_fixed_header(handle.read(HEADER.size))
        seeds = split_seeds(header, handle.read(seeds_size(header)))
    size = path.stat().st_size
    expected = serialized_size(header)
    if size != expected:
        raise CiphertextFormatError(f"{path.name} is {size} bytes; its header announces "
                                    f"{expected} (truncated or padded)")
    if verify_digest and not hash_file(path).trailer_ok():
        raise CiphertextFormatError(f"{path.name}: digest mismatch, corrupted or tampered")
    return CiphertextFile(path, header, seeds)


class _DigestWriter:
    """Writes to a temporary file, hashing as it goes; `commit` appends the digest, fsyncs
    (when `durable`) and renames into place, so a reader never sees a half-written ciphertext."""

    def __init__(self, path: Path, durable: bool = True) -> None:
        self.path = Path(path)
        self.durable = durable
        self.tmp = self.path.with_name(self.path.name + ".partial")
        self.handle: BinaryIO = open(self.tmp, "wb")
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.handle.write(data)

    def commit(self) -> None:
        trailer = self.digest.digest()
        self.handle.write(trailer)
        self.handle.flush()
        if self.durable:
            os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.tmp, self.path)
        self.digest.update(trailer)  # now SHA-256 of the whole file, the transfer digest
        remember(self.path, self.digest.hexdigest())
        if self.durable:
            fsync_dir(self.path.parent)

    def abort(self) -> None:
        self.handle.close()
        self.tmp.unlink(missing_ok=True)


def _write(path: Path, header: CiphertextHeader, seeds: tuple[bytes, ...],
           bodies: Iterator[np.ndarray], durable: bool = True) -> CiphertextHeader:
    writer = _DigestWriter(path, durable)
    try:
        writer.write(encode_header(header, seeds))
        written = 0
        for body in bodies:
            writer.write(pack_coefficients(body, header))
            written += body.size
        if written != header.body_slots:
            raise CiphertextFormatError(f"wrote {written} coefficients, header says "
                                        f"{header.body_slots}")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return header


def encrypt_to_file(path: Path, secret: SecretKey, source: SlotSource, *, layout_hash: bytes,
                    round_number: int, mask: EncryptionMask | None = None,
                    durable: bool = True,
                    pairwise: Callable[[np.ndarray, int], None] | None = None
                    ) -> CiphertextHeader:
    """Encrypt `source` into a ciphertext file, batch by batch, with a fresh seed, or with a
    mask prepared ahead of time (`prepare_mask`, consumed here); `durable=False` skips the
    fsyncs for a file that is sent and deleted, and re-made rather than read after a crash;
    `pairwise(batch, first_slot)` adds the round's pairwise masks (ucadi.lwe.masking) to each
    batch of b coefficients before it is rounded and written."""
    header = new_header(secret, source, layout_hash, round_number)
    if mask is not None:
        mask.take(secret, header.slot_count)
    seed = mask.seed if mask is not None else fresh_seed()
    batches = iter_encrypted_batches(secret, source, seed, 0, header.block_stop, mask)
    if pairwise is not None:
        batches = _masked(batches, pairwise)
    return _write(path, header, (seed,), batches, durable)


def _masked(batches: Iterator[np.ndarray], pairwise: Callable[[np.ndarray, int], None],
            first: int = 0) -> Iterator[np.ndarray]:
    """Each batch after `pairwise(batch, its first slot)` changed it in place."""
    for batch in batches:
        pairwise(batch, first)
        first += batch.size
        yield batch


def write_ciphertext(path: Path, ciphertext: Ciphertext) -> CiphertextHeader:
    """Write an in-memory ciphertext to a file (digest, fsync, atomic rename)."""
    header, body = ciphertext.header, ciphertext.body
    step = BATCH_BLOCKS * header.params.ring_degree
    return _write(path, header, tuple(ciphertext.seeds),
                  (body[i:i + step] for i in range(0, body.size, step)))


def read_ciphertext(path: Path, verify_digest: bool = True) -> Ciphertext:
    """A ciphertext file in memory (its digest checked unless the caller already did)."""
    ct = open_verified(path, verify_digest=False)
    batches = ct.iter_whole_body(verify_digest)
    body, position = np.empty(ct.header.body_slots, dtype=np.uint64), 0
    for batch in batches:  # filled in place: no list of batches and second whole-body copy
        body[position:position + batch.size] = batch
        position += batch.size
    return Ciphertext(ct.header, ct.seeds, body)


def sum_files(paths: Sequence[Path], out_path: Path) -> CiphertextHeader:
    """Homomorphically add ciphertext files into `out_path`, batch by batch."""
    files = [open_verified(p, verify_digest=False) for p in paths]
    header, seeds = merged_seeds((f.header, f.seeds) for f in files)
    params = header.params

    def summed() -> Iterator[np.ndarray]:
        iterators = [f.iter_verified_batches() for f in files]
        for batches in zip(*iterators, strict=True):
            yield add_bodies(batches, params)
    return _write(out_path, header, seeds, summed())


def decrypt_file(secret: SecretKey, path: Path) -> np.ndarray:
    """Plaintext slots (int64) of a ciphertext file's slot range."""
    ct = open_verified(path, verify_digest=False)
    return np.concatenate(list(iter_decrypted_batches(secret, ct.header, ct.seeds,
                                                      ct.iter_verified_batches())))


def decrypt_fedavg_file(secret: SecretKey, path: Path, codec: FixedPointCodec,
                        product: DecryptionProduct | None = None, verify_digest: bool = True,
                        check: SumCheck | None = None,
                        unmask: Callable[[np.ndarray, int], None] | None = None
                        ) -> tuple[np.ndarray, int]:
    """(FedAvg vector as float32, total weight) from a whole-vector summed ciphertext file of
    site updates (values, the weight slot, the tag slots: integrity.update_slot_count);
    `product`: the round's decryption product prepared ahead (prepared.prepare_product);
    `verify_digest=False` only when the caller checked the trailing digest itself; `check`:
    the integrity check a site makes before a sum may become a model (it raises
    SumIntegrityError after the last slot if the sum fails it, before anything is returned);
    `unmask(batch, first_slot)`: removes the masks left in a pairwise-masked sum from each
    body batch before it is decrypted (ucadi.lwe.masking)."""
    ct = open_verified(path, verify_digest=False)
    header = ct.header
    if (header.block_start, header.block_stop) != (0, header.total_blocks):
        raise CiphertextMismatchError("FedAvg needs the whole vector; merge the shards first")
    if header.frac_bits != codec.frac_bits:
        raise CiphertextMismatchError(f"ciphertext encodes {header.frac_bits} fractional bits, "
                                      f"codec has {codec.frac_bits}")
    values = header.slot_count - 1 - TAG_SLOTS
    if values < 1:
        raise CiphertextMismatchError(f"a sum of site updates has at least {TAG_SLOTS + 2} "
                                      f"slots (values, weight, tags); this one has "
                                      f"{header.slot_count}")
    # The total weight is slot `values`: decrypt the block(s) holding it first, so every batch
    # is divided as it is decoded and written once, straight into the float32 result.
    n = header.params.ring_degree
    first_tail = values // n
    tail = replace(header, block_start=first_tail, block_stop=header.total_blocks)
    tail_batches = ct.iter_body_batches(first_tail, header.total_blocks)
    if unmask is not None:
        tail_batches = _masked(tail_batches, unmask, first_tail * n)
    tail_slots = np.concatenate(list(iter_decrypted_batches(
        secret, tail, ct.seeds, tail_batches, product)))
    weight = int(tail_slots[values - first_tail * n])
    if weight < 1 and check is None:
        raise EncodingError(f"decrypted total weight is {weight}; expected >= 1")
    scale = average_scale(codec, max(weight, 1))
    out = np.empty(values, dtype=np.float32)
    tags = np.empty(TAG_SLOTS, dtype=np.int64)
    position = 0
    batches = ct.iter_whole_body(verify_digest)
    if unmask is not None:
        batches = _masked(batches, unmask)
    for slots in iter_decrypted_batches(secret, header, ct.seeds, batches, product):
        if check is not None:
            check.add(position, slots[:max(0, values + 1 - position)])
        take = max(0, min(slots.size, values - position))
        decode_average_into(slots[:take], scale, out[position:position + take])
        for index in range(max(position, values + 1), position + slots.size):
            tags[index - values - 1] = slots[index - position]
        position += slots.size
    if check is not None:
        check.verify(tags)
        if weight < 1:
            raise EncodingError(f"decrypted total weight is {weight}; expected >= 1")
    return out, weight


def shard_ranges(total_blocks: int, replicas: int) -> list[tuple[int, int]]:
    """Split blocks 0..total into `replicas` contiguous, nearly equal, non-empty ranges."""
    if not 1 <= replicas <= total_blocks:
        raise CiphertextMismatchError(f"cannot split {total_blocks} blocks across {replicas} "
                                      f"replicas (need 1..{total_blocks})")
    cuts = [round(i * total_blocks / replicas) for i in range(replicas + 1)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def extract_blocks(path: Path, block_start: int, block_stop: int, out_path: Path) -> Path:
    """Write the partial ciphertext of blocks [block_start, block_stop) of a verified file."""
    ct = open_verified(path)
    header = replace(ct.header, block_start=block_start, block_stop=block_stop)
    _write(out_path, header, ct.seeds, ct.iter_body_batches(block_start, block_stop))
    return out_path


def merge_shards(paths: Sequence[Path], out_path: Path) -> CiphertextHeader:
    """Concatenate partial (summed) ciphertexts covering all blocks into one ciphertext."""
    files = sorted((open_verified(p) for p in paths), key=lambda f: f.header.block_start)
    if not files:
        raise CiphertextMismatchError("no shards to merge")
    base = files[0].header
    position = 0
    for f in files:
        whole = replace(f.header, block_start=0, block_stop=f.header.total_blocks)
        replace(base, block_start=0, block_stop=base.total_blocks).check_compatible(whole)
        if f.seeds != files[0].seeds or f.header.block_start != position:
            raise CiphertextMismatchError(
                "shards do not fit together: they must hold the same contributions and cover "
                f"contiguous block ranges (gap or overlap at block {position})")
        position = f.header.block_stop
    if position != base.total_blocks:
        raise CiphertextMismatchError(f"shards cover blocks up to {position} of "
                                      f"{base.total_blocks}")
    header = replace(base, block_start=0, block_stop=base.total_blocks)

    def bodies() -> Iterator[np.ndarray]:
        for f in files:
            yield from f.iter_body_batches()
    return _write(out_path, header, files[0].seeds, bodies())
