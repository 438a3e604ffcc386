"""The site's client of the aggregator: retries with backoff, resumable chunked transfers."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import grpc

from ucadi.errors import UcadiError
from ucadi.lwe.masking import PublicRoundKeys
from ucadi.ops import faults
from ucadi.ops.serving import grpc_options
from ucadi.ops.tls import TLSFiles, secure_channel
from ucadi.v1 import federation_pb2, federation_pb2_grpc
from ucadi.wire import ChunkReceiver, file_digest, iter_file_chunks
from ucadi.wire.crypto_client import CryptoServiceError, SumClient
from ucadi.wire.roster import RosterCache

log = logging.getLogger(__name__)
T = TypeVar("T")

# Transient failures (aggregator restarting, network blip, overload): retried with backoff
# for the whole retry budget, since they succeed once the aggregator is back.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
# A connection cut in the middle of a call (the aggregator killed mid-stream) also surfaces as
# INTERNAL or UNKNOWN, but so does a server bug that answers the same every time: those are
# retried only this many times, then reported. Anything else (a refusal) is never retried.
SERVER_ERRORS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
SERVER_ERROR_RETRIES = 3
# First backoff; it doubles up to 10 s.
FIRST_RETRY_DELAY_S = 0.2


class Downloaded(NamedTuple):
    """A downloaded file and whether it ends with the SHA-256 of the bytes before it, checked
    as they arrived (ciphertext and plaintext-update files), so its reader need not hash it
    again."""

    path: Path
    trailer_ok: bool


class RoundSites(NamedTuple):
    """A round's expected and uploaded sites, and every site that ever joined (sorted)."""

    expected: tuple[str, ...]
    uploaded: tuple[str, ...]
    known: tuple[str, ...]


class FederationRejected(UcadiError):
    """The aggregator refused a request for a reason retrying will not fix."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.status = code.name


class AggregatorUnreachable(UcadiError):
    """The aggregator stayed unreachable for longer than the retry budget."""

    status = "UNAVAILABLE"


class FederationClient:
    """FederationService calls with backoff on transient errors and resumable transfers."""

    def __init__(self, target: str, tls: TLSFiles, retry_budget_s: float = 600.0,
                 rpc_timeout_s: float = 120.0,
                 cancelled: threading.Event | None = None, sum_target: str = "") -> None:
        self.target = target
        self.channel = secure_channel(target, tls, options=tuple(grpc_options()))
        self.stub = federation_pb2_grpc.FederationServiceStub(self.channel)
        # The crypto service (the one the site's key comes from): where updates go directly
        # when the aggregator asks for it (JoinResponse.contribute_to_sum).
        self.sum_channel = (secure_channel(sum_target, tls, options=tuple(grpc_options()))
                            if sum_target else None)
        self.joined: Any = None
        # The federation's roster, for the compact site sets of GetRound and GetStatus.
        self.roster = RosterCache()
        self.retry_budget_s = retry_budget_s
        self.rpc_timeout_s = rpc_timeout_s
        # Set on shutdown: stops retrying at once instead of waiting out the budget.
        self.cancelled = cancelled or threading.Event()

    def close(self) -> None:
        """Close the channels."""
        self.channel.close()
        if self.sum_channel is not None:
            self.sum_channel.close()

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.retry_budget_s
        delay = FIRST_RETRY_DELAY_S
        server_errors = 0
        while True:
            try:
                return call()
            except grpc.RpcError as exc:
                code = exc.code()
                server_errors += code in SERVER_ERRORS
                if code not in RETRYABLE and (code not in SERVER_ERRORS
                                              or server_errors > SERVER_ERROR_RETRIES):
                    log.error("%s: %s (%s); not retried: %s", what, code.name, exc.details(),
                              "the same server error came back" if code in SERVER_ERRORS
                              else "a refusal that retrying cannot change")
                    raise FederationRejected(code, exc.details() or "") from exc
                if self.cancelled.is_set():
                    raise AggregatorUnreachable(f"{what}: cancelled (shutting down) while the "
                                                f"aggregator was unreachable") from exc
                if time.monotonic() > deadline:
                    raise AggregatorUnreachable(
                        f"{what}: aggregator at {self.target} unreachable for "
                        f"{self.retry_budget_s:.0f} s ({code.name}: {exc.details()})") from exc
                log.warning("%s: %s (%s); retrying in %.1f s (%s)", what, code.name,
                            exc.details(), delay,
                            f"server error, retry {server_errors} of {SERVER_ERROR_RETRIES}"
                            if code in SERVER_ERRORS else "transient")
                self.cancelled.wait(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)

    def join(self, train_cases: int, agent_version: str) -> Any:
        """Join the federation; returns JoinResponse (model, encryption, rounds)."""
        request = federation_pb2.JoinRequest(train_cases=train_cases, agent_version=agent_version)
        self.joined = self._retry("join", lambda: self.stub.Join(request,
                                                                 timeout=self.rpc_timeout_s))
        return self.joined

    def leave(self, reason: str) -> None:
        """Leave the federation."""
        self._retry("leave", lambda: self.stub.Leave(federation_pb2.LeaveRequest(reason=reason),
                                                     timeout=self.rpc_timeout_s))

    def get_round(self, known_round: int = 0, known_state: int = 0, wait_s: float = 0.0) -> Any:
        """Current RoundInfo, long-polling up to wait_s for a change. Its sites come as
        compact sets over the roster (issue 25) and are filled into the name lists here."""
        def ask() -> Any:
            request = federation_pb2.GetRoundRequest(
                known_round=known_round, known_state=known_state, wait_seconds=wait_s,
                site_sets=self._site_sets_wanted())
            return self.stub.GetRound(request, timeout=wait_s + self.rpc_timeout_s)

        info = self._retry("get round", ask)
        self._fill_names(info, info.roster)
        return info

    def status(self, round_number: int = 0) -> Any:
        """FederationStatus overview: every round's summary, or only `round_number`'s."""
        return self._retry("status", lambda: self.stub.GetStatus(
            federation_pb2.GetStatusRequest(round=round_number), timeout=self.rpc_timeout_s))

    def round_sites(self, round_number: int) -> RoundSites:
        """Round `round_number`'s expected and uploaded sites, and every site that ever joined,
        from the site's compact view of the status (no per-site rows; issue 25)."""
        status = self._retry("status", lambda: self.stub.GetStatus(
            federation_pb2.GetStatusRequest(round=round_number,
                                            site_sets=self._site_sets_wanted()),
            timeout=self.rpc_timeout_s))
        summary = next((r for r in status.rounds if r.round == round_number), None)
        if summary is not None:
            self._fill_names(summary, status.roster)
        compact = status.HasField("roster") or any(r.HasField("expected") for r in status.rounds)
        known = (self.roster.roster.names if compact or not status.sites
                 else tuple(s.site for s in status.sites))
        if summary is None:
            return RoundSites((), (), tuple(known))
        return RoundSites(tuple(summary.expected_sites), tuple(summary.uploaded_sites),
                          tuple(sorted(set(known) | set(summary.expected_sites))))

    def _site_sets_wanted(self) -> Any:
        return federation_pb2.SiteSetsWanted(compact=True, roster_digest=self.roster.digest)

    def _fill_names(self, reply: Any, carried: Any) -> None:
        """Decode a RoundInfo's or RoundSummary's SiteSets into its name lists (an aggregator
        that predates them answers with the lists and no sets)."""
        carried = carried if carried.digest else None
        for site_set, names in ((reply.expected, reply.expected_sites),
                                (reply.uploaded, reply.uploaded_sites)):
            if site_set.roster_digest:
                decoded = self.roster.names(site_set, carried)
                del names[:]
                names.extend(decoded)

    def report_metrics(self, metrics: dict[str, Any]) -> None:
        """Share aggregate validation metrics of a global version."""
        request = federation_pb2.SiteMetrics(**metrics)
        self._retry("report metrics", lambda: self.stub.ReportMetrics(
            request, timeout=self.rpc_timeout_s))

    def download_global(self, version: int, path: Path, max_bytes: int) -> Downloaded:
        """Fetch a global version into `path`, resuming after interruptions: from the sum
        service where the aggregator says sites exchange ciphertexts there (FetchSum of round
        `version`: the same bytes), from the aggregator otherwise or once that fails. Not
        fsynced: the site decrypts it at once, and after a crash downloads it again."""
        receiver = ChunkReceiver(path, max_bytes=max_bytes, resume=False, durable=False)
        from_sum = self._exchanges_with_sum()

        def attempt() -> Downloaded:
            nonlocal receiver, from_sum
            timeout = self.rpc_timeout_s * 10
            try:
                if from_sum:
                    chunks = SumClient(self.sum_channel).sum_chunks(
                        self.joined.federation_id, version, receiver.received, timeout)
                else:
                    chunks = self.stub.DownloadGlobal(federation_pb2.DownloadGlobalRequest(
                        version=version, offset=receiver.received), timeout=timeout)
                for chunk in chunks:
                    receiver.feed(chunk)
            except grpc.RpcError as exc:
                receiver.abort(keep_partial=True)
                receiver = ChunkReceiver(path, max_bytes=max_bytes, resume=True,
                                         durable=False)
                if not from_sum:
                    raise
                from_sum = False  # the aggregator serves the same bytes: resume there
                log.warning("version %d: the sum service did not send it (%s); downloading "
                            "it from the aggregator", version, exc.code().name)
                return attempt()
            return Downloaded(receiver.finish(), receiver.trailer_ok)

        return self._retry(f"download version {version}", attempt)

    def upload_update(self, header: Any, path: Path) -> Any:
        """Upload an encrypted update: to the sum service, then recorded at the aggregator,
        where the aggregator asks for it and the sum service took it; otherwise through the
        aggregator, resuming from the stored offset after a break."""
        header.total_size = path.stat().st_size
        header.sha256 = file_digest(path)
        if self._sent_to_sum(header, path):
            faults.crash_point("after_sum_took_before_record")
            header.contributed = True
            recorded = federation_pb2.UploadUpdateRequest(header=header)
            return self._retry(f"record round {header.round}", lambda: self.stub.UploadUpdate(
                iter([recorded]), timeout=self.rpc_timeout_s))

        def requests(offset: int) -> Iterator[Any]:
            yield federation_pb2.UploadUpdateRequest(header=header)
            for chunk in iter_file_chunks(path, offset=offset, sha256=header.sha256):
                yield federation_pb2.UploadUpdateRequest(chunk=chunk)

        def attempt() -> Any:
            offset = self.stub.GetUploadOffset(
                federation_pb2.GetUploadOffsetRequest(round=header.round),
                timeout=self.rpc_timeout_s).offset
            if offset > header.total_size:
                offset = 0
            return self.stub.UploadUpdate(requests(offset), timeout=self.rpc_timeout_s * 10)

        return self._retry(f"upload round {header.round}", attempt)

    # -- pairwise masks (services/trainer/masking.py) ------------------------------------
    def exchange_mask_keys(self, round_number: int, keys: PublicRoundKeys,
                           wait_s: float) -> Any:
        """Advertise this site's round keys and certified identity; MaskKeys once the key set
        is fixed (or not yet, after `wait_s`)."""
        request = federation_pb2.ExchangeMaskKeysRequest(
            round=round_number, wait_seconds=wait_s, keys=federation_pb2.RoundKeys(
                share_public=keys.share_public, mask_public=keys.mask_public,
                identity=keys.identity))
        return self._retry(f"mask keys of round {round_number}", lambda: self.stub.ExchangeMaskKeys(
            request, timeout=wait_s + self.rpc_timeout_s))

    def exchange_mask_shares(self, round_number: int, sealed: dict[str, bytes],
                             wait_s: float) -> Any:
        """Give this site's sealed share pairs; MaskShares (the participants and the pairs
        sealed for this site) once the participants are fixed."""
        request = federation_pb2.ExchangeMaskSharesRequest(
            round=round_number, wait_seconds=wait_s, shares=[
                federation_pb2.SealedSharePair(site=site, sealed=blob)
                for site, blob in sorted(sealed.items())])
        return self._retry(f"mask shares of round {round_number}",
                           lambda: self.stub.ExchangeMaskShares(
                               request, timeout=wait_s + self.rpc_timeout_s))

    def send_unmasking(self, round_number: int, self_seeds: dict[str, bytes],
                       mask_keys: dict[str, bytes]) -> Any:
        """This survivor's unmasking answer."""
        request = federation_pb2.UnmaskingShares(
            round=round_number,
            self_seeds=[federation_pb2.RevealedShare(owner=o, share=v)
                        for o, v in sorted(self_seeds.items())],
            mask_keys=[federation_pb2.RevealedShare(owner=o, share=v)
                       for o, v in sorted(mask_keys.items())])
        return self._retry(f"unmasking of round {round_number}",
                           lambda: self.stub.SendUnmaskingShares(request,
                                                                 timeout=self.rpc_timeout_s))

    def unmasking_terms(self, round_number: int) -> list[tuple[bytes, int]]:
        """The masks left in global version `round_number`'s sum, as (seed, sign)."""
        reply = self._retry(f"unmasking terms of round {round_number}",
                            lambda: self.stub.GetUnmasking(federation_pb2.GetUnmaskingRequest(
                                round=round_number), timeout=self.rpc_timeout_s))
        return [(bytes(t.seed), int(t.sign)) for t in reply.terms]

    def central_holds_bytes(self, round_number: int) -> bool:
        """Whether the central side already holds anything this site sent for the round: an
        upload recorded or in progress at the aggregator, or a ciphertext at the sum service.
        Then a restarted site (its seed ledger restored from a backup, deleted, or a second
        replica) must not encrypt under its round seed again: two ciphertexts under one seed
        give their difference without the key. True when it cannot tell (the site then uses
        a fresh random seed, which costs one ring product when decrypting)."""
        site = self.joined.site
        try:
            offset = self.stub.GetUploadOffset(
                federation_pb2.GetUploadOffsetRequest(round=round_number),
                timeout=self.rpc_timeout_s).offset
            recorded = site in self.round_sites(round_number).uploaded
            held = self._exchanges_with_sum() and SumClient(self.sum_channel).contribution_digest(
                self.joined.federation_id, round_number, site) is not None
        except (grpc.RpcError, CryptoServiceError, FederationRejected) as exc:
            log.warning("round %d: could not ask what the central side holds from this site "
                        "(%s); encrypting under a fresh random seed", round_number, exc)
            return True
        return bool(offset or recorded or held)

    def _exchanges_with_sum(self) -> bool:
        """Whether ciphertexts go to and come from the sum service directly."""
        return self.sum_channel is not None and bool(getattr(self.joined, "contribute_to_sum",
                                                             False))

    def _sent_to_sum(self, header: Any, path: Path) -> bool:
        """Send the ciphertext to the sum service if the aggregator asks for it; False when
        it does not or the send failed (the upload then goes through the aggregator, which
        retries and resumes)."""
        if not self._exchanges_with_sum():
            return False
        sums = SumClient(self.sum_channel)
        try:
            sums.add_contribution(self.joined.federation_id, header.round, self.joined.site,
                                  path)
        except CryptoServiceError as exc:
            if exc.code == grpc.StatusCode.ALREADY_EXISTS:
                return self._held_counts(sums, header)
            log.warning("round %d: the sum service did not take the update (%s); uploading it "
                        "through the aggregator", header.round, exc)
            return False
        return True

    def _held_counts(self, sums: SumClient, header: Any) -> bool:
        """The sum service already holds a ciphertext from this site for the round (sent by
        a run of this site that stopped before recording it): that one counts, and the record
        names its digest (the same size: same round, key and layout). False where the sum
        service does not say which it holds: the upload then goes through the aggregator,
        whose accepted upload replaces it."""
        try:
            held = sums.contribution_digest(self.joined.federation_id, header.round,
                                            self.joined.site)
        except CryptoServiceError as exc:
            log.warning("round %d: the sum service holds a ciphertext from this site but did not "
                        "say which (%s); uploading this one through the aggregator",
                        header.round, exc)
            return False
        if held is None:
            return False
        if held != header.sha256:
            log.warning("round %d: the sum service already holds this site's ciphertext "
                        "(sha256 %s…, sent before a restart); recording that one, not the "
                        "update just made", header.round, held[:12])
            header.sha256 = held
        return True
