"""gRPC glue of the aggregator: thin servicers over `RoundCoordinator`, and process start-up."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from services.aggregator import metrics
from services.aggregator.config import DEFAULTS, build_federation_config
from services.aggregator.contracts import (
    COLLECTING,
    COMPLETED,
    SEALED,
    SEALING,
    UNMASKING,
    RejectedUpload,
    RoundView,
)
from services.aggregator.coordinator import RoundCoordinator
from services.aggregator.store import AggregatorStore
from ucadi.errors import UcadiError
from ucadi.ops import faults
from ucadi.ops.config import load_config
from ucadi.ops.serving import (
    RunningServer,
    grpc_errors,
    serve,
    status_code,
    wait_for_stop_signal,
)
from ucadi.ops.tls import Identity, TLSFiles, peer_identity
from ucadi.ops.tracing import setup_tracing, tracer
from ucadi.v1 import federation_pb2, federation_pb2_grpc
from ucadi.wire import ChunkReceiver, TransferError
from ucadi.wire.roster import Roster

log = logging.getLogger(__name__)
SERVICE_NAME = "ucadi.v1.FederationService"
_STATES = {COLLECTING: federation_pb2.ROUND_STATE_COLLECTING,
           SEALING: federation_pb2.ROUND_STATE_SEALING,
           COMPLETED: federation_pb2.ROUND_STATE_COMPLETED,
           SEALED: federation_pb2.ROUND_STATE_SEALED,
           UNMASKING: federation_pb2.ROUND_STATE_UNMASKING}
_STATE_NAMES = {v: k for k, v in _STATES.items()}


def _site(context: grpc.ServicerContext) -> Identity:
    identity = peer_identity(context)
    identity.require_role("site")
    return identity


class FederationServicer(federation_pb2_grpc.FederationServiceServicer):
    """FederationService: validate, delegate to the coordinator, map errors to statuses."""

    def __init__(self, coordinator: RoundCoordinator) -> None:
        self.rounds = coordinator
        self.config = coordinator.config
        # The current view's site sets, encoded once per view and roster (every site polls).
        self._view_sets: tuple[RoundView, bytes, Any, Any] | None = None

    def _round_info(self, view: RoundView, site: str | None,
                    roster: Roster | None = None) -> federation_pb2.RoundInfo:
        """The round as RoundInfo: its sites as name lists, or as SiteSets over `roster`."""
        info = federation_pb2.RoundInfo(
            round=view.round, state=_STATES.get(view.state, 0), base_version=view.base_version,
            latest_version=view.latest_version, deadline_unix=view.deadline,
            start_epoch=view.start_epoch, local_epochs=view.local_epochs,
            awaiting_caller=bool(site and view.state == COLLECTING and site in view.expected
                                 and site not in view.uploaded),
            min_sites=view.min_sites, optimizer_digest=self.config.model["optimizer_digest"],
            unmasking_survivors=view.survivors, unmasking_dropped=view.dropped)
        if roster is not None:
            cached = self._view_sets
            if cached is None or cached[0] is not view or cached[1] != roster.digest:
                cached = (view, roster.digest, _site_set(roster, view.expected),
                          _site_set(roster, view.uploaded))
                self._view_sets = cached
            info.expected.CopyFrom(cached[2])
            info.uploaded.CopyFrom(cached[3])
        else:
            info.expected_sites.extend(view.expected)
            info.uploaded_sites.extend(view.uploaded)
        return info

    @grpc_errors
    def Join(self, request: Any, context: grpc.ServicerContext) -> Any:
        site = _site(context).name
        self.rounds.join(site, int(request.train_cases))
        model, enc = self.config.model, self.config.encryption
        return federation_pb2.JoinResponse(
            federation_id=self.config.federation_id,
            model=federation_pb2.ModelSpec(
                arch=model["arch"], preset=model["preset"], task=model["task"],
                init_seed=model["init_seed"], recipe_json=model["recipe_json"],
                layout_hash=model["layout_hash"], value_count=model["value_count"],
                optimizer_json=model["optimizer_json"]),
            encryption=federation_pb2.EncryptionSpec(
                enabled=enc["enabled"], parameter_set=enc["parameter_set"], key_id=enc["key_id"]),
            local_epochs=self.config.local_epochs, total_rounds=self.config.total_rounds,
            site=site, contribute_to_sum=self.rounds.contributions_at_sum(),
            weight_unit=self.config.weight_unit, pairwise_masks=self.config.pairwise_masks)

    @grpc_errors
    def Leave(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.rounds.leave(_site(context).name)
        return federation_pb2.LeaveResponse()

    @grpc_errors
    def GetRound(self, request: Any, context: grpc.ServicerContext) -> Any:
        site = _site(context).name
        self.rounds.seen(site)
        view = self.rounds.wait_for_change(request.known_round,
                                           _STATE_NAMES.get(request.known_state, ""),
                                           float(request.wait_seconds))
        if not request.site_sets.compact:
            return self._round_info(view, site)
        roster = self.rounds.roster()  # taken after the view: it covers every site it names
        info = self._round_info(view, site, roster)
        _carry_roster(info.roster, roster, request.site_sets)
        return info

    @grpc_errors
    def DownloadGlobal(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        site = _site(context).name
        self.rounds.seen(site)
        chunks = self.rounds.global_chunks(request.version, request.offset)
        sent = metrics.DOWNLOAD_BYTES.labels(self.config.federation_id)
        for chunk in chunks:
            sent.inc(chunk.ByteSize())  # not len(chunk.data): reading the field copies it
            yield chunk

    def UploadUpdate(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        site = ""
        try:
            site = _site(context).name
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("part") != "header":
                raise RejectedUpload("the first message of UploadUpdate must be the header",
                                     "malformed")
            header = first.header
            with tracer(__name__).start_as_current_span("upload") as span:
                span.set_attribute("ucadi.site", site)
                span.set_attribute("ucadi.round", header.round)
                if header.contributed:
                    record = self._record_contribution(site, header, request_iterator)
                    return self._receipt(record, site)
                partial = self.rounds.check_upload(site, header)
                receiver = _resumable_receiver(partial, header, self.config.max_upload_bytes)
                # A whole (not resumed) upload is passed on to the sum as it arrives.
                streamed = None if receiver.received else self.rounds.stream_upload(
                    header.round, site, header.sha256)
                try:
                    assembled = _receive_upload(request_iterator, receiver, header, streamed)
                except BaseException:
                    if streamed is not None:
                        streamed.abort()
                    raise
                record = self.rounds.accept_upload(site, header, assembled,
                                                   digest_checked=receiver.trailer_ok,
                                                   streamed=streamed)
            return self._receipt(record, site)
        except RejectedUpload as exc:
            self.rounds.reject(site, exc.reason, exc)
            context.abort(status_code(exc), str(exc))
        except UcadiError as exc:
            self.rounds.reject(site, "invalid", exc)
            context.abort(status_code(exc), str(exc))

    def _record_contribution(self, site: str, header: Any, rest: Iterator[Any]) -> Any:
        if next(rest, None) is not None:
            raise RejectedUpload("an upload with header.contributed carries no chunks: its "
                                 "ciphertext went to the SumService", "malformed")
        return self.rounds.record_contribution(site, header)

    def _receipt(self, record: Any, site: str) -> Any:
        faults.crash_point("after_record_before_reply")
        return federation_pb2.UploadReceipt(
            round=record.round, site=site, stored_bytes=record.size, sha256=record.sha256,
            uploads_in_round=self.rounds.upload_count(record.round))

    @grpc_errors
    def GetUploadOffset(self, request: Any, context: grpc.ServicerContext) -> Any:
        site = _site(context).name
        return federation_pb2.GetUploadOffsetResponse(
            offset=self.rounds.upload_offset(request.round, site))

    @grpc_errors
    def ReportMetrics(self, request: Any, context: grpc.ServicerContext) -> Any:
        site = _site(context).name
        self.rounds.report_metrics(site, {
            "version": request.version, "split": request.split, "cases": request.cases,
            "auc": request.auc, "sensitivity": request.sensitivity,
            "specificity": request.specificity})
        return federation_pb2.ReportMetricsResponse()

    @grpc_errors
    def GetStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        peer_identity(context)
        compact = request.site_sets.compact
        # A site's view (compact) leaves out the per-site rows: their size grows with the sites
        # and every site asks once per global version (issue 25).
        sites = [] if compact else [federation_pb2.SiteStatus(
            site=s.name, state=s.state, last_round=s.last_round, last_seen_unix=last_seen,
            train_cases=s.train_cases,
            metrics=federation_pb2.SiteMetrics(**s.metrics) if s.metrics else None)
            for s, last_seen in self.rounds.sites()]
        summaries = self.rounds.round_summaries(request.round)
        view = self.rounds.view()
        roster = self.rounds.roster() if compact else None  # after what it must cover
        current = self._round_info(view, None, roster)
        rounds = []
        for r, uploaded in summaries:
            summary = federation_pb2.RoundSummary(
                round=r.round, state=_STATES.get(r.state, 0), opened_unix=r.opened,
                sealed_unix=r.sealed, bytes_in=r.bytes_in, global_bytes=r.global_bytes,
                sum_seconds=r.sum_seconds)
            if roster is not None:
                summary.expected.CopyFrom(_site_set(roster, r.expected))
                summary.uploaded.CopyFrom(_site_set(roster, uploaded))
            else:
                summary.expected_sites.extend(r.expected)
                summary.uploaded_sites.extend(uploaded)
            rounds.append(summary)
        status = federation_pb2.FederationStatus(
            federation_id=self.config.federation_id, current=current, sites=sites,
            rounds=rounds, total_rounds=self.config.total_rounds)
        if roster is not None:
            _carry_roster(status.roster, roster, request.site_sets)
        return status

    # -- pairwise masks: validate, delegate to MaskExchange -----------------------------------
    def _wait(self, done: Any, wait_seconds: float) -> None:
        """Block up to `wait_seconds` (at most 60) until `done()`, stepping the phases."""
        deadline = time.monotonic() + max(0.0, min(float(wait_seconds), 60.0))
        core = self.rounds.core
        with core.changed:
            while not done() and time.monotonic() < deadline:
                current = core.current()
                if current is not None and self.rounds.masks.advance(current):
                    core.notify()
                if done():
                    return
                core.changed.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))

    @grpc_errors
    def ExchangeMaskKeys(self, request: Any, context: grpc.ServicerContext) -> Any:
        site = _site(context).name
        self.rounds.seen(site)
        masks = self.rounds.masks
        masks.advertise(site, request.round, bytes(request.keys.share_public),
                        bytes(request.keys.mask_public), bytes(request.keys.identity))
        self._wait(lambda: masks.keys(request.round)[0].key_set is not None,
                   request.wait_seconds)
        record, keys = masks.keys(request.round)
        return federation_pb2.MaskKeys(
            round=request.round, complete=record.key_set is not None,
            threshold=record.threshold, neighbours=record.neighbours,
            keys=[federation_pb2.RoundKeys(site=s, share_public=k.share_public,
                                           mask_public=k.mask_public, identity=k.identity)
                  for s, k in keys.items()])

    @grpc_errors
    def ExchangeMaskShares(self, request: Any, context: grpc.ServicerContext) -> Any:
        site = _site(context).name
        self.rounds.seen(site)
        masks = self.rounds.masks
        sealed = {s.site: bytes(s.sealed) for s in request.shares}
        if len(sealed) != len(request.shares):
            raise UcadiError("one sealed share pair per site")
        masks.give_shares(site, request.round, sealed)
        self._wait(lambda: masks.shares_for(site, request.round)[0] is not None,
                   request.wait_seconds)
        participants, received = masks.shares_for(site, request.round)
        return federation_pb2.MaskShares(
            round=request.round, complete=participants is not None,
            participants=participants or [],
            shares=[federation_pb2.SealedSharePair(site=s, sealed=b)
                    for s, b in sorted(received.items())])

    @grpc_errors
    def SendUnmaskingShares(self, request: Any, context: grpc.ServicerContext) -> Any:
        site = _site(context).name
        self.rounds.seen(site)
        answers = self.rounds.masks.answer(
            site, request.round, {s.owner: bytes(s.share) for s in request.self_seeds},
            {s.owner: bytes(s.share) for s in request.mask_keys})
        return federation_pb2.UnmaskingReceipt(round=request.round, answers=answers)

    @grpc_errors
    def GetUnmasking(self, request: Any, context: grpc.ServicerContext) -> Any:
        _site(context)
        terms = self.rounds.masks.terms(request.round)
        return federation_pb2.Unmasking(round=request.round, terms=[
            federation_pb2.MaskTerm(seed=seed, sign=sign) for seed, sign in terms])


def _site_set(roster: Roster, names: list[str]) -> federation_pb2.SiteSet:
    return federation_pb2.SiteSet(roster_digest=roster.digest, members=roster.encode(names))


def _carry_roster(into: Any, roster: Roster, wanted: Any) -> None:
    """Put the roster into a reply when the caller's copy (its digest) is not this one."""
    if wanted.roster_digest != roster.digest:
        into.digest = roster.digest
        into.sites.extend(roster.names)


def _receive_upload(messages: Iterator[Any], receiver: ChunkReceiver, header: Any,
                    streamed: Any) -> Path:
    """The upload's chunks into its (fsynced) file, each passed on to `streamed` too."""
    try:
        for message in messages:
            if message.WhichOneof("part") != "chunk":
                raise RejectedUpload("only chunks may follow the header", "malformed")
            receiver.feed(message.chunk)
            if streamed is not None:
                streamed.send(message.chunk)
    except (TransferError, RejectedUpload):
        receiver.abort(keep_partial=False)
        raise
    except BaseException:
        receiver.abort(keep_partial=True)  # a broken stream resumes later
        raise
    if (receiver.total_size, receiver.sha256) != (header.total_size, header.sha256):
        receiver.abort(keep_partial=False)
        raise RejectedUpload("chunks disagree with the header's size or digest", "malformed")
    try:
        return receiver.finish()
    except TransferError as exc:
        raise RejectedUpload(str(exc), "malformed") from exc


def _resumable_receiver(partial: Path, header: Any, max_bytes: int) -> ChunkReceiver:
    """Resume a partial upload only if it is the same payload (same digest) as before."""
    marker = partial.with_suffix(".sha256")
    same = marker.exists() and marker.read_text().strip() == header.sha256
    partial.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(header.sha256)
    return ChunkReceiver(partial, max_bytes=max_bytes, resume=same)


def start_aggregator(config: dict[str, Any], *, port_file: Path | None = None
                     ) -> tuple[RunningServer, RoundCoordinator]:
    """Build the coordinator from a loaded config and start serving."""
    from services.aggregator.crypto_backend import connect_crypto, learn_active_key

    server_cfg = config["server"]
    tls = TLSFiles.from_dir(Path(server_cfg["tls_dir"])) if server_cfg["tls_dir"] else None
    learn_active_key(config, tls, float(server_cfg["key_wait_s"]))
    fed_config = build_federation_config(config)
    store = AggregatorStore(Path(server_cfg["state_dir"]))
    backend, facts_reader, approval = connect_crypto(config, tls, store, fed_config)
    coordinator = RoundCoordinator(
        fed_config, store, backend, facts_reader, approval,
        copy_global_versions=bool(server_cfg["copy_global_versions"]))
    servicer = FederationServicer(coordinator)
    coordinator.recover()  # sites then see the state a crash left finished, not half done
    running = serve(lambda s: federation_pb2_grpc.add_FederationServiceServicer_to_server(
        servicer, s), service_names=[SERVICE_NAME], address=server_cfg["address"], tls=tls,
        metrics_address=server_cfg["metrics_address"] or None, port_file=port_file,
        health_address=server_cfg["health_address"] or None)
    coordinator.start()
    return running, coordinator


# flag -> (section, key) of DEFAULTS it overrides
FLAG_SETTINGS = {"state_dir": ("server", "state_dir"), "address": ("server", "address"),
                 "metrics_address": ("server", "metrics_address"),
                 "tls_dir": ("server", "tls_dir"), "crypto": ("server", "crypto_address")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `ucadi serve aggregator` (each overrides the config file)."""
    parser.add_argument("--config", type=Path, help="YAML config file (see services/aggregator/"
                                                    "config.py for every setting)")
    parser.add_argument("--state-dir", help="durable state folder (SQLite + ciphertext files)")
    parser.add_argument("--address", help="gRPC listen address HOST:PORT (port 0 = any)")
    parser.add_argument("--metrics-address", help="Prometheus /metrics HOST:PORT")
    parser.add_argument("--tls-dir", help="folder with ca.crt, tls.crt, tls.key")
    parser.add_argument("--crypto", help="crypto service HOST:PORT")
    parser.add_argument("--port-file", type=Path, help="write the bound ports here once serving")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the aggregator until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s aggregator %(message)s")
    config = load_config(DEFAULTS, args.config)
    for flag, (section, key) in FLAG_SETTINGS.items():
        if getattr(args, flag, None):
            config[section][key] = getattr(args, flag)
    setup_tracing("ucadi-aggregator")
    running, coordinator = start_aggregator(config, port_file=args.port_file)
    wait_for_stop_signal()
    coordinator.stop()
    running.stop(2.0)
    return 0
