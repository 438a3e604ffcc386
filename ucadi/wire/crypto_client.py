"""Clients of the crypto service: key registration/fetch/upload and ciphertext summation.

Used by the aggregator (SumClient, ShardedSumClient), trainers (KeyClient.fetch_secret) and the
custodian CLI (KeyClient). Ciphertexts always travel as files streamed in chunks.
`ShardedSumClient` spreads a round over several sum-service replicas by block range: each
replica adds only its blocks, and the sealed partial sums are merged back into one ciphertext.
"""

from __future__ import annotations

import queue
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ucadi.errors import UcadiError
from ucadi.lwe.blocks import ceil_div
from ucadi.lwe.custodian import SiteIdentity
from ucadi.lwe.keys import SecretKey
from ucadi.lwe.keywrap import SiteKeyPair, unwrap_site_key
from ucadi.lwe.packing import packed_size
from ucadi.lwe.params import get_parameters
from ucadi.lwe.sampling import SEED_BYTES
from ucadi.lwe.serialization import DIGEST_BYTES, HEADER
from ucadi.lwe.stream import extract_blocks, merge_shards, open_verified, shard_ranges
from ucadi.v1 import common_pb2, crypto_pb2, crypto_pb2_grpc
from ucadi.wire.chunks import (
    DEFAULT_CHUNK_BYTES,
    ChunkReceiver,
    iter_file_chunks,
    receive,
)

T = TypeVar("T")
# Seconds a unary SumService call may take (a closing seal serializes a 46 M-value sum: ~1 s).
UNARY_TIMEOUT_S = 120.0


class CryptoServiceError(UcadiError):
    """The crypto service refused a call; carries its gRPC status code and message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"crypto service: {code.name}: {details}")
        self.code = code
        self.status = code.name


def _call(method: Callable[[], T]) -> T:
    try:
        return method()
    except grpc.RpcError as exc:
        raise CryptoServiceError(exc.code(), exc.details() or "") from exc


class KeyClient:
    """KeyService calls; the caller's identity is its TLS certificate."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = crypto_pb2_grpc.KeyServiceStub(channel)

    def register_site_key(self, public_key_pem: bytes) -> crypto_pb2.RegisterSiteKeyResponse:
        """Register this site's X25519 public key (role site)."""
        request = crypto_pb2.RegisterSiteKeyRequest(public_key_pem=public_key_pem)
        return _call(lambda: self.stub.RegisterSiteKey(request))

    def approve_site_key(self, site: str, fingerprint: str) -> None:
        """Let `site` replace its registered key with this one (role custodian)."""
        request = crypto_pb2.ApproveSiteKeyRequest(site=site, fingerprint=fingerprint)
        _call(lambda: self.stub.ApproveSiteKey(request))

    def site_keys(self) -> dict[str, bytes]:
        """site -> public key PEM of every registered site (role custodian)."""
        reply = _call(lambda: self.stub.ListSiteKeys(crypto_pb2.ListSiteKeysRequest()))
        return {s.site: s.public_key_pem for s in reply.sites}

    def put_wrapped_keys(self, key_id: str, parameter_set: str, blobs: dict[str, bytes],
                         activate: bool = True) -> crypto_pb2.PutWrappedKeysResponse:
        """Upload one key id's wrapped blobs (role custodian)."""
        request = crypto_pb2.PutWrappedKeysRequest(
            key_id=key_id, parameter_set=parameter_set, activate=activate,
            blobs=[crypto_pb2.WrappedBlob(site=s, blob=b) for s, b in sorted(blobs.items())])
        return _call(lambda: self.stub.PutWrappedKeys(request))

    def wrapped_key(self, key_id: str = "") -> crypto_pb2.WrappedKey:
        """This site's wrapped blob (the active key when key_id is empty)."""
        return _call(lambda: self.stub.GetWrappedKey(crypto_pb2.GetWrappedKeyRequest(
            key_id=key_id)))

    def active_key(self) -> tuple[str, str] | None:
        """(key id, parameter set) of the active key, or None."""
        reply = _call(lambda: self.stub.GetActiveKey(crypto_pb2.GetActiveKeyRequest()))
        return (reply.key_id, reply.parameter_set) if reply.key_id else None

    def site_approved(self, site: str, key_id: str = "") -> bool:
        """Whether `site` holds a wrapped copy of key_id (the active key when empty)."""
        reply = _call(lambda: self.stub.GetSiteApproval(crypto_pb2.GetSiteApprovalRequest(
            site=site, key_id=key_id)))
        return reply.approved

    def fetch_secret(self, site: str, site_keys: SiteKeyPair, custodian: Ed25519PublicKey,
                     key_id: str = "") -> SecretKey:
        """Fetch this site's copy of the LWE secret, check the custodian signed it, unwrap it."""
        return self.fetch_site_key(site, site_keys, custodian, key_id)[0]

    def fetch_site_key(self, site: str, site_keys: SiteKeyPair, custodian: Ed25519PublicKey,
                       key_id: str = "") -> tuple[SecretKey, SiteIdentity]:
        """`fetch_secret`, and the custodian's certificate of the site's key that came with
        it (what the site presents with its round keys when masking)."""
        wrapped = self.wrapped_key(key_id)
        return unwrap_site_key(wrapped.blob, bytes.fromhex(wrapped.key_id), site, site_keys,
                               custodian)


def _max_sum_bytes(status: crypto_pb2.RoundStatus) -> int:
    params = get_parameters(status.parameter_set)
    slots = min(status.block_stop * params.ring_degree, status.slot_count) - (
        status.block_start * params.ring_degree)
    return (HEADER.size + params.max_sites * SEED_BYTES + packed_size(slots, params.sum_bits)
            + DIGEST_BYTES)


class StreamedContribution:
    """A site's ciphertext passed on to the sum service chunk by chunk while it is still
    arriving at the aggregator. The service adds it only when `commit` sends the stream's
    commit message; `abort` cancels the call and nothing is added, even where gRPC delivers the
    cancellation as a normal end of stream. A stream that failed on the way (`failed`) is
    dropped by the caller, who then sends the stored file as usual.
    """

    _END, _ABORT = object(), object()
    QUEUED_CHUNKS = 16  # bounded: a slow sum service slows the upload, memory stays flat

    def __init__(self, stub: crypto_pb2_grpc.SumServiceStub, federation: str,
                 round_number: int, site: str, sha256: str = "") -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=self.QUEUED_CHUNKS)
        metadata = crypto_pb2.ContributionMetadata(federation=federation, round=round_number,
                                                   site=site, sha256=sha256)

        def messages() -> Iterator[crypto_pb2.ContributionMessage]:
            yield crypto_pb2.ContributionMessage(metadata=metadata)
            while (item := self._queue.get()) is not self._END:
                if item is self._ABORT:
                    raise UcadiError("contribution stream aborted by the aggregator")
                yield crypto_pb2.ContributionMessage(chunk=item)
            yield crypto_pb2.ContributionMessage(commit=True)
        self._call = stub.AddContribution.future(messages())

    @property
    def failed(self) -> bool:
        """The call ended before `commit` (the service refused it, or went away)."""
        return self._call.done()

    def send(self, chunk: common_pb2.Chunk) -> None:
        """Pass one chunk on (returns at once if the stream has already failed)."""
        while not self._call.done():
            try:
                self._queue.put(chunk, timeout=0.1)
                return
            except queue.Full:
                continue

    def commit(self, timeout_s: float = 600.0) -> crypto_pb2.ContributionReceipt:
        """End the stream and wait until the service has added the contribution durably."""
        if not self._call.done():
            self._queue.put(self._END)
        return _call(lambda: self._call.result(timeout=timeout_s))

    def abort(self) -> None:
        """Cancel: the service discards what it received."""
        self._call.cancel()
        try:
            self._queue.put_nowait(self._ABORT)
        except queue.Full:
            pass  # the cancelled call no longer reads the queue


class SumClient:
    """SumService calls of the aggregator, for one replica (and a site's own contribution)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = crypto_pb2_grpc.SumServiceStub(channel)

    def open_round(self, federation: str, round_number: int, *, key_id: str,
                   parameter_set: str, layout_hash: bytes, slot_count: int,
                   block_start: int = 0, block_stop: int = 0) -> crypto_pb2.RoundStatus:
        """Open a round (this replica's block range; 0, 0 = all blocks)."""
        request = crypto_pb2.OpenRoundRequest(
            federation=federation, round=round_number, key_id=key_id,
            parameter_set=parameter_set, layout_hash=layout_hash, slot_count=slot_count,
            block_start=block_start, block_stop=block_stop)
        return _call(lambda: self.stub.OpenRound(request, timeout=UNARY_TIMEOUT_S))

    def add_contribution(self, federation: str, round_number: int, site: str, path: Path,
                         chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                         sha256: str = "") -> crypto_pb2.ContributionReceipt:
        """Stream one site's ciphertext file; returns once the service made it durable.
        `sha256`: the aggregator vouches for this accepted upload (ContributionMetadata)."""
        def messages() -> Iterator[crypto_pb2.ContributionMessage]:
            yield crypto_pb2.ContributionMessage(metadata=crypto_pb2.ContributionMetadata(
                federation=federation, round=round_number, site=site, sha256=sha256))
            for chunk in iter_file_chunks(Path(path), chunk_bytes):
                yield crypto_pb2.ContributionMessage(chunk=chunk)
            yield crypto_pb2.ContributionMessage(commit=True)
        return _call(lambda: self.stub.AddContribution(messages()))

    def stream_contribution(self, federation: str, round_number: int, site: str,
                            sha256: str = "") -> StreamedContribution:
        """Start passing a ciphertext on while it arrives (see StreamedContribution)."""
        return StreamedContribution(self.stub, federation, round_number, site, sha256)

    def status(self, federation: str, round_number: int, site: str = ""
               ) -> crypto_pb2.RoundStatus:
        """Where the round stands on this replica (`site`: listing that site's contribution
        only)."""
        return _call(lambda: self.stub.GetRoundStatus(crypto_pb2.GetRoundStatusRequest(
            federation=federation, round=round_number, site=site), timeout=UNARY_TIMEOUT_S))

    def contribution_digest(self, federation: str, round_number: int, site: str) -> str | None:
        """Hex SHA-256 of the site's contribution this replica holds for the round, or None."""
        status = self.status(federation, round_number, site)
        return dict(zip(status.sites, status.sha256, strict=False)).get(site)

    def seal(self, federation: str, round_number: int, out_path: Path,
             sites: Sequence[str] = ()) -> Path:
        """Seal the round holding exactly `sites`' contributions (empty: all) and store its
        (partial) sum ciphertext at out_path, verified."""
        limit = _max_sum_bytes(self.status(federation, round_number))
        chunks: Iterator[common_pb2.Chunk] = self.stub.SealRound(crypto_pb2.SealRoundRequest(
            federation=federation, round=round_number, sites=list(sites)))
        received = _call(lambda: receive(chunks, Path(out_path), limit))
        open_verified(received.path, verify_digest=not received.trailer_ok)
        return received.path


    def close_round(self, federation: str, round_number: int,
                    sites: Sequence[str] = ()) -> crypto_pb2.SealedRound:
        """Seal the round as `seal` does, answering the sum's size and digest only."""
        request = crypto_pb2.SealRoundRequest(federation=federation, round=round_number,
                                              sites=list(sites))
        return _call(lambda: self.stub.CloseRound(request, timeout=UNARY_TIMEOUT_S))

    def sum_chunks(self, federation: str, round_number: int, offset: int = 0,
                   timeout: float | None = None) -> Iterator[common_pb2.Chunk]:
        """A sealed round's sum as it streams from `offset` (raises grpc.RpcError)."""
        return self.stub.FetchSum(crypto_pb2.FetchSumRequest(
            federation=federation, round=round_number, offset=offset), timeout=timeout)

    def fetch_sum(self, federation: str, round_number: int, out_path: Path,
                  max_bytes: int) -> ChunkReceiver:
        """Store a sealed round's sum at out_path (fsynced; digest checked as it arrives)."""
        return _call(lambda: receive(self.sum_chunks(federation, round_number),
                                     Path(out_path), max_bytes))


class ShardedSumClient:
    """One round spread over sum-service replicas, each owning a contiguous block range."""

    def __init__(self, replicas: list[SumClient]) -> None:
        if not replicas:
            raise UcadiError("a sharded sum needs at least one replica")
        self.replicas = replicas
        self.ranges: list[tuple[int, int]] = []

    def open_round(self, federation: str, round_number: int, *, key_id: str,
                   parameter_set: str, layout_hash: bytes, slot_count: int) -> None:
        """Open the round on every replica with its share of the blocks."""
        total_blocks = ceil_div(slot_count, get_parameters(parameter_set).ring_degree)
        self.ranges = shard_ranges(total_blocks, min(len(self.replicas), total_blocks))
        for replica, (start, stop) in zip(self.replicas, self.ranges, strict=False):
            replica.open_round(federation, round_number, key_id=key_id,
                               parameter_set=parameter_set, layout_hash=layout_hash,
                               slot_count=slot_count, block_start=start, block_stop=stop)

    def add_contribution(self, federation: str, round_number: int, site: str,
                         path: Path) -> list[crypto_pb2.ContributionReceipt]:
        """Cut a site's ciphertext into the replicas' block ranges and send each part."""
        receipts = []
        with tempfile.TemporaryDirectory(prefix="ucadi-shard-") as tmp:
            for index, (start, stop) in enumerate(self.ranges):
                part = extract_blocks(Path(path), start, stop, Path(tmp) / f"part{index}.ct")
                receipts.append(self.replicas[index].add_contribution(
                    federation, round_number, site, part))
                part.unlink()
        return receipts

    def seal(self, federation: str, round_number: int, out_path: Path,
             sites: Sequence[str] = ()) -> Path:
        """Seal every replica and merge their partial sums into one sum ciphertext."""
        with tempfile.TemporaryDirectory(prefix="ucadi-shard-") as tmp:
            parts = [replica.seal(federation, round_number, Path(tmp) / f"sum{index}.ct", sites)
                     for index, replica in enumerate(self.replicas[:len(self.ranges)])]
            merge_shards(parts, Path(out_path))
        return Path(out_path)
