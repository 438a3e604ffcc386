"""The aggregator's view of the crypto service: the SumService as a `SumBackend`, sharded
across replicas by block range when several addresses are configured (DESIGN.md scaling path),
and the key service's site approvals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from services.aggregator.contracts import CiphertextFacts, SumBackend
from services.aggregator.local_backend import (
    LocalSumBackend,
    PlainSumBackend,
    read_facts,
    read_plain_facts,
)
from services.aggregator.store import AggregatorStore
from ucadi.errors import UcadiError
from ucadi.lwe.integrity import update_slot_count
from ucadi.lwe.stream import open_verified
from ucadi.ops.serving import grpc_options
from ucadi.ops.tls import TLSFiles, secure_channel
from ucadi.wire.crypto_client import (
    CryptoServiceError,
    KeyClient,
    ShardedSumClient,
    StreamedContribution,
    SumClient,
)

log = logging.getLogger(__name__)


class GrpcSumBackend:
    """SumBackend over one SumService, or several replicas each summing a block range."""

    def __init__(self, targets: list[str], tls: TLSFiles, federation: str,
                 model: dict[str, Any], encryption: dict[str, Any],
                 site_contributions: bool = True) -> None:
        self.federation = federation
        self.model = model
        self.encryption = encryption
        self.channels = [secure_channel(t, tls, options=tuple(grpc_options())) for t in targets]
        replicas = [SumClient(channel) for channel in self.channels]
        # One replica takes whole files; several take block ranges cut from each upload.
        self.sums: SumClient | ShardedSumClient = (
            replicas[0] if len(replicas) == 1 else ShardedSumClient(replicas))
        # Sites send whole ciphertexts; block ranges for replicas are cut here.
        self.site_contributions = site_contributions and isinstance(self.sums, SumClient)
        self._opened: set[int] = set()

    def close(self) -> None:
        """Close the channels."""
        for channel in self.channels:
            channel.close()

    def open_round(self, round_number: int) -> None:
        """Open the round on every replica (idempotent on the service side too)."""
        if round_number in self._opened:
            return
        self.sums.open_round(self.federation, round_number, key_id=self.encryption["key_id"],
                             parameter_set=self.encryption["parameter_set"],
                             layout_hash=bytes.fromhex(self.model["layout_hash"]),
                             slot_count=update_slot_count(self.model["value_count"]))
        self._opened.add(round_number)

    def add(self, round_number: int, site: str, path: Path,
            streamed: StreamedContribution | None = None, sha256: str = "") -> None:
        """Add a site's ciphertext: commit the stream that passed it on as it arrived, or
        (none, or it failed on the way) send the stored file; one already added before a
        restart counts as done."""
        try:
            if streamed is not None and not streamed.failed:
                try:
                    streamed.commit()
                    return
                except CryptoServiceError as exc:
                    if exc.code in (grpc.StatusCode.ALREADY_EXISTS,
                                    grpc.StatusCode.INVALID_ARGUMENT,
                                    grpc.StatusCode.FAILED_PRECONDITION):
                        raise  # the service judged the ciphertext: sending it again changes nothing
            elif streamed is not None:
                streamed.abort()
            if isinstance(self.sums, SumClient):
                self.sums.add_contribution(self.federation, round_number, site, path,
                                           sha256=sha256)
            else:
                self.sums.add_contribution(self.federation, round_number, site, path)
        except CryptoServiceError as exc:
            if exc.code != grpc.StatusCode.ALREADY_EXISTS:
                raise

    def stream(self, round_number: int, site: str,
               sha256: str = "") -> StreamedContribution | None:
        """Pass an arriving upload on to the sum service chunk by chunk (one replica only:
        sharded replicas take block ranges cut from the stored file)."""
        if not isinstance(self.sums, SumClient):
            return None
        self.open_round(round_number)
        return self.sums.stream_contribution(self.federation, round_number, site, sha256)

    def seal(self, round_number: int, out_path: Path, sites: Sequence[str]) -> None:
        """Seal the round (every replica) into one verified sum ciphertext of exactly the
        accepted `sites` (a contribution a site sent but whose upload was refused is left out)."""
        self.sums.seal(self.federation, round_number, out_path, sites)

    def takes_site_contributions(self) -> bool:
        """Whether sites send their ciphertexts to the (one) SumService themselves."""
        return self.site_contributions

    def close_round(self, round_number: int, sites: Sequence[str]) -> tuple[int, str] | None:
        """Seal without taking the bytes where sites fetch the sum themselves: (size, sha256)."""
        if not self.site_contributions:
            return None
        assert isinstance(self.sums, SumClient)
        sealed = self.sums.close_round(self.federation, round_number, sites)
        return sealed.sum_bytes, sealed.sha256

    def copy_sum(self, round_number: int, out_path: Path, size: int, sha256: str) -> None:
        """Fetch a closed round's sum into out_path, checked against its size and digest."""
        assert isinstance(self.sums, SumClient)
        received = self.sums.fetch_sum(self.federation, round_number, out_path, max_bytes=size)
        if (received.total_size, received.sha256) != (size, sha256):
            out_path.unlink(missing_ok=True)
            raise UcadiError(f"the sum service's sum of round {round_number} is "
                             f"{received.total_size} bytes, sha256 {received.sha256}; it was "
                             f"sealed as {size} bytes, {sha256}")
        open_verified(out_path, verify_digest=not received.trailer_ok)

    def sum_chunks(self, round_number: int, offset: int) -> Iterator[Any]:
        """A closed round's sum streamed on from the sum service, from `offset`."""
        assert isinstance(self.sums, SumClient)
        try:
            yield from self.sums.sum_chunks(self.federation, round_number, offset)
        except grpc.RpcError as exc:
            raise CryptoServiceError(exc.code(), exc.details() or "") from exc

    def contribution_digest(self, round_number: int, site: str) -> str | None:
        """Hex SHA-256 of the site's contribution the SumService holds for the round."""
        if not isinstance(self.sums, SumClient):
            return None
        return self.sums.contribution_digest(self.federation, round_number, site)


class KeyApproval:
    """A site is approved when the custodian has wrapped the federation's key for it."""

    def __init__(self, target: str, tls: TLSFiles, key_id: str) -> None:
        self.keys = KeyClient(secure_channel(target, tls, options=tuple(grpc_options())))
        self.key_id = key_id

    def __call__(self, site: str) -> bool:
        """Whether `site` holds a wrapped copy of the federation's key id."""
        return self.keys.site_approved(site, self.key_id)


def connect_crypto(config: dict[str, Any], tls: TLSFiles | None, store: AggregatorStore,
                   federation: Any) -> tuple[SumBackend, Callable[[Path], CiphertextFacts],
                                             Callable[[str], bool]]:
    """(sum backend, ciphertext header reader, site approval check) for this deployment.

    No crypto address: ciphertexts are added in-process (single node); sites are still
    approved by the key service (server.key_address). Encryption off: plaintext updates
    (benchmarking only).
    """
    if not federation.encryption["enabled"]:
        return PlainSumBackend(store), read_plain_facts, lambda site: True
    targets = [t.strip() for t in config["server"]["crypto_address"].split(",") if t.strip()]
    keys = config["server"].get("key_address", "").strip() or (targets[0] if targets else "")
    if not keys:
        raise UcadiError("a joining site's key approval is checked at the key service: set "
                         "server.crypto_address, or server.key_address on a single node")
    if tls is None:
        raise UcadiError("the crypto service needs mutual TLS: set server.tls_dir")
    approval = KeyApproval(keys, tls, federation.encryption["key_id"])
    if not targets:
        return LocalSumBackend(store), read_facts, approval
    backend = GrpcSumBackend(targets, tls, federation.federation_id, federation.model,
                             federation.encryption,
                             site_contributions=bool(config["server"]["site_contributions"]))
    return backend, read_facts, approval


def learn_active_key(config: dict[str, Any], tls: TLSFiles | None, wait_s: float,
                     poll_s: float = 2.0) -> None:
    """Fill encryption.key_id (and an empty parameter_set) from the key service's active key
    when the config leaves the key id empty, waiting up to `wait_s` for the custodian to
    upload one (`ucadi keys create`, then `ucadi keys wrap`), so nobody copies the id by hand.
    A key id the config names is used as it is."""
    encryption, server = config["encryption"], config["server"]
    if not encryption["enabled"] or encryption["key_id"] or tls is None:
        return
    targets = [t.strip() for t in server["crypto_address"].split(",") if t.strip()]
    address = server.get("key_address", "").strip() or (targets[0] if targets else "")
    if not address:
        return  # build_federation_config names what is missing
    deadline = time.monotonic() + wait_s
    with secure_channel(address, tls, options=tuple(grpc_options())) as channel:
        keys = KeyClient(channel)
        while (active := _active_key(keys)) is None:
            if time.monotonic() > deadline:
                raise UcadiError(f"the key service at {address} has no active key after "
                                 f"{wait_s:.0f} s: the custodian creates and wraps one (`ucadi "
                                 "keys create`, `ucadi keys wrap`), or set encryption.key_id")
            log.info("waiting for an active key at the key service %s (the custodian runs "
                     "`ucadi keys wrap`)", address)
            time.sleep(poll_s)
    key_id, parameter_set = active
    if encryption["parameter_set"] and encryption["parameter_set"] != parameter_set:
        raise UcadiError(f"the key service's active key {key_id} uses parameter set "
                         f"{parameter_set}, but encryption.parameter_set is "
                         f"{encryption['parameter_set']}; leave it empty or make them agree")
    encryption["key_id"], encryption["parameter_set"] = key_id, parameter_set
    log.info("encryption key id %s (%s) from the key service at %s", key_id, parameter_set,
             address)


def _active_key(keys: KeyClient) -> tuple[str, str] | None:
    """The active key, or None while there is none or the key service is not up yet."""
    try:
        return keys.active_key()
    except CryptoServiceError as exc:
        if exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return None
        raise
