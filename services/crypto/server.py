"""gRPC servicers of the crypto service (thin: identity, validation, domain call, status).

`run_crypto_service` starts KeyService and SumService on one server with mTLS, health,
reflection and /metrics; `python -m services.crypto.server --state-dir D --tls-dir T
--address 127.0.0.1:0 --port-file F` runs it as a process (the demo and the sharding test).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

from services.crypto import metrics
from services.crypto.keystore import KeyStore
from services.crypto.sumstore import RoundSpec, RoundState, SumRoundState, SumStore
from ucadi.errors import UcadiError
from ucadi.lwe.pins import checked_fingerprint
from ucadi.lwe.serialization import serialized_size
from ucadi.ops.config import load_config
from ucadi.ops.serving import RunningServer, grpc_errors, serve, wait_for_stop_signal
from ucadi.ops.tls import Identity, PermissionDeniedError, TLSFiles, peer_identity
from ucadi.v1 import common_pb2, crypto_pb2, crypto_pb2_grpc
from ucadi.wire.chunks import DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES

log = logging.getLogger(__name__)

SERVICE_NAMES = ["ucadi.v1.KeyService", "ucadi.v1.SumService"]
# The aggregator opens, feeds, inspects and seals sums; a site may only add its own ciphertext
# (and the aggregator's seal names which contributions count).
SUM_CALLER_ROLE, SUM_CALLER_NAME = "service", "aggregator"


class KeyServicer(crypto_pb2_grpc.KeyServiceServicer):
    """Site key registration, wrapped-key upload by the custodian, per-site fetch."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        metrics.WRAPPED_KEYS_STORED.set(store.wrapped_count())

    @grpc_errors
    def RegisterSiteKey(self, request: crypto_pb2.RegisterSiteKeyRequest,
                        context: grpc.ServicerContext) -> crypto_pb2.RegisterSiteKeyResponse:
        """A site registers its own X25519 public key."""
        caller = peer_identity(context)
        caller.require_role("site")
        record = self.store.register_site(caller.name, request.public_key_pem)
        metrics.KEY_REGISTRATIONS.inc()
        return crypto_pb2.RegisterSiteKeyResponse(site=record.site,
                                                  fingerprint=record.fingerprint)

    @grpc_errors
    def ApproveSiteKey(self, request: crypto_pb2.ApproveSiteKeyRequest,
                       context: grpc.ServicerContext) -> crypto_pb2.ApproveSiteKeyResponse:
        """The custodian lets a site replace its key with the one of this fingerprint."""
        peer_identity(context).require_role("custodian")
        if not request.site:
            raise UcadiError("ApproveSiteKey needs the site's name")
        self.store.approve_key_change(request.site, checked_fingerprint(request.fingerprint))
        log.info("custodian approved a new key for site %s (fingerprint %s)", request.site,
                 request.fingerprint.lower())
        return crypto_pb2.ApproveSiteKeyResponse()

    @grpc_errors
    def ListSiteKeys(self, request: crypto_pb2.ListSiteKeysRequest,
                     context: grpc.ServicerContext) -> crypto_pb2.ListSiteKeysResponse:
        """The custodian lists registered site keys."""
        peer_identity(context).require_role("custodian")
        return crypto_pb2.ListSiteKeysResponse(sites=[
            crypto_pb2.SiteKey(site=r.site, public_key_pem=r.public_key_pem,
                               fingerprint=r.fingerprint, registered_at=r.registered_at)
            for r in self.store.site_keys()])

    @grpc_errors
    def PutWrappedKeys(self, request: crypto_pb2.PutWrappedKeysRequest,
                       context: grpc.ServicerContext) -> crypto_pb2.PutWrappedKeysResponse:
        """The custodian uploads wrapped secrets (and may rotate the active key id)."""
        peer_identity(context).require_role("custodian")
        blobs = {b.site: b.blob for b in request.blobs}
        if len(blobs) != len(request.blobs):
            raise UcadiError("one blob per site: a site appears twice in the request")
        stored = self.store.put_wrapped(request.key_id, request.parameter_set, blobs,
                                        request.activate)
        metrics.WRAPPED_KEYS_STORED.set(self.store.wrapped_count())
        active = self.store.active_key()
        return crypto_pb2.PutWrappedKeysResponse(stored=stored,
                                                 active_key_id=active[0] if active else "")

    @grpc_errors
    def GetWrappedKey(self, request: crypto_pb2.GetWrappedKeyRequest,
                      context: grpc.ServicerContext) -> crypto_pb2.WrappedKey:
        """A site fetches the blob wrapped for itself (identity from its certificate)."""
        caller = peer_identity(context)
        caller.require_role("site")
        record = self.store.wrapped_for(caller.name, request.key_id)
        return crypto_pb2.WrappedKey(key_id=record.key_id, parameter_set=record.parameter_set,
                                     blob=record.blob)

    @grpc_errors
    def GetActiveKey(self, request: crypto_pb2.GetActiveKeyRequest,
                     context: grpc.ServicerContext) -> crypto_pb2.ActiveKey:
        """The active key id and parameter set, for any authenticated caller."""
        peer_identity(context)
        active = self.store.active_key()
        return crypto_pb2.ActiveKey(key_id=active[0], parameter_set=active[1]) if active else (
            crypto_pb2.ActiveKey())


    @grpc_errors
    def GetSiteApproval(self, request: crypto_pb2.GetSiteApprovalRequest,
                        context: grpc.ServicerContext) -> crypto_pb2.SiteApproval:
        """Whether a site holds a wrapped copy of a key id (the aggregator admits sites so)."""
        peer_identity(context).require_role("service", "custodian", "operator")
        if not request.site:
            raise UcadiError("GetSiteApproval needs the site name")
        key_id, approved = self.store.is_approved(request.site, request.key_id)
        return crypto_pb2.SiteApproval(site=request.site, key_id=key_id, approved=approved)


def _require_aggregator(context: grpc.ServicerContext) -> Identity:
    caller = peer_identity(context)
    _check_aggregator(caller)
    return caller


def _check_aggregator(caller: Identity) -> None:
    caller.require_role(SUM_CALLER_ROLE)
    if caller.name != SUM_CALLER_NAME:
        raise PermissionDeniedError(f"service {caller.name!r} may not call the sum service; "
                                    f"only {SUM_CALLER_NAME!r} feeds and seals sums")


def _require_contributor(caller: Identity, site: str) -> None:
    """The aggregator (for any site), or the site itself sending its own ciphertext."""
    if caller.role == "site":
        if caller.name != site:
            raise PermissionDeniedError(f"site {caller.name!r} may only add its own ciphertext, "
                                        f"not one named {site!r}")
        return
    _check_aggregator(caller)


def _chunk_bytes(requested: int) -> int:
    chunk_bytes = requested or DEFAULT_CHUNK_BYTES
    if chunk_bytes > MAX_CHUNK_BYTES:
        raise UcadiError(f"chunk_bytes must be at most {MAX_CHUNK_BYTES}")
    return chunk_bytes


def round_status(state: RoundState, contributors: int | None = None) -> crypto_pb2.RoundStatus:
    """Protobuf view of a round's state (`contributors`: the round's count where `state`
    lists only some of them)."""
    spec = state.spec
    held = len(state.sites) if contributors is None else contributors
    size = serialized_size(replace(spec.expected_header(), contributors=held)) \
        if state.state == SumRoundState.SEALED else 0
    return crypto_pb2.RoundStatus(
        federation=spec.federation, round=spec.round, state=state.state, sites=state.sites,
        key_id=spec.key_id, parameter_set=spec.parameter_set, layout_hash=spec.layout_hash,
        slot_count=spec.slot_count, block_start=spec.block_start, block_stop=spec.block_stop,
        sum_bytes=size, sha256=state.digests)


class SumServicer(crypto_pb2_grpc.SumServiceServicer):
    """Durable ciphertext accumulation per (federation, round), one block range per replica."""

    def __init__(self, store: SumStore, keys: KeyStore | None = None) -> None:
        self.store = store
        # The federation's sites (from the key service in the same process; none elsewhere):
        # a contribution carrying another site's public round seed is refused.
        self.keys = keys

    @grpc_errors
    def OpenRound(self, request: crypto_pb2.OpenRoundRequest,
                  context: grpc.ServicerContext) -> crypto_pb2.RoundStatus:
        """Open (idempotently) a round with what it accepts."""
        _require_aggregator(context)
        spec = RoundSpec(request.federation, request.round, request.key_id,
                         request.parameter_set, bytes(request.layout_hash), request.slot_count,
                         request.block_start, request.block_stop)
        return round_status(self.store.open_round(spec))

    @grpc_errors
    def AddContribution(self, request_iterator: Iterator[crypto_pb2.ContributionMessage],
                        context: grpc.ServicerContext) -> crypto_pb2.ContributionReceipt:
        """Metadata first, then the ciphertext's chunks; acknowledged once durable."""
        caller = peer_identity(context)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "metadata":
            raise UcadiError("the first message of AddContribution must be its metadata")
        meta = first.metadata
        if not meta.site:
            raise UcadiError("contribution metadata must name the site")
        _require_contributor(caller, meta.site)
        received = 0
        # The stream may be passed on while the upload still arrives at the aggregator: the
        # sum's own time starts at its last byte.
        last_byte = time.perf_counter()

        def chunks() -> Iterator[common_pb2.Chunk]:
            nonlocal received, last_byte
            committed = False
            for message in request_iterator:
                part = message.WhichOneof("part")
                if committed or part not in ("chunk", "commit") or (
                        part == "commit" and not message.commit):
                    raise UcadiError("after the metadata only chunks may follow, and then "
                                     "commit (true) as the last message")
                if part == "commit":
                    committed = True
                    continue
                chunk = message.chunk
                received = chunk.total_size  # all of it, once accepted (no resume here)
                yield chunk
            if not committed:  # e.g. cancelled after its last byte: nothing is added
                raise UcadiError("the contribution stream ended without its commit message; "
                                 "nothing was added")
            last_byte = time.perf_counter()
        try:
            # Only the aggregator vouches: a site's own contribution never replaces another.
            vouched = meta.sha256 if caller.role != "site" else ""
            others = self.keys.site_names() if self.keys is not None else []
            held, digest = self.store.add_contribution(meta.federation, meta.round, meta.site,
                                                       chunks(), vouched, others)
        except UcadiError as exc:
            metrics.SUM_CONTRIBUTIONS.labels(outcome=type(exc).__name__).inc()
            raise
        metrics.SUM_CONTRIBUTIONS.labels(outcome="accepted").inc()
        metrics.SUM_BYTES.inc(received)
        metrics.SUM_SECONDS.observe(time.perf_counter() - last_byte)
        return crypto_pb2.ContributionReceipt(federation=meta.federation, round=meta.round,
                                              site=meta.site, contributions=held,
                                              sha256=digest)

    @grpc_errors
    def SealRound(self, request: crypto_pb2.SealRoundRequest,
                  context: grpc.ServicerContext) -> Iterator[common_pb2.Chunk]:
        """Seal the round and stream its sum ciphertext."""
        _require_aggregator(context)
        chunk_bytes = _chunk_bytes(request.chunk_bytes)
        sealed = self.store.seal(request.federation, request.round, list(request.sites))
        yield from sealed.chunks(chunk_bytes)

    @grpc_errors
    def CloseRound(self, request: crypto_pb2.SealRoundRequest,
                   context: grpc.ServicerContext) -> crypto_pb2.SealedRound:
        """Seal the round; answer its sum's size and digest (FetchSum streams it)."""
        _require_aggregator(context)
        sealed = self.store.seal(request.federation, request.round, list(request.sites))
        size, digest = sealed.size_and_digest()
        assert sealed.state is not None  # seal() answers with the round's state
        return crypto_pb2.SealedRound(federation=request.federation, round=request.round,
                                      sites=sealed.state.sites, sum_bytes=size, sha256=digest)

    @grpc_errors
    def FetchSum(self, request: crypto_pb2.FetchSumRequest,
                 context: grpc.ServicerContext) -> Iterator[common_pb2.Chunk]:
        """A sealed round's sum from `offset`, for the aggregator or any site."""
        caller = peer_identity(context)
        if caller.role != "site":
            _check_aggregator(caller)
        chunk_bytes = _chunk_bytes(request.chunk_bytes)
        sealed = self.store.fetch(request.federation, request.round)
        size, _ = sealed.size_and_digest()
        if request.offset > size:
            raise UcadiError(f"offset {request.offset} is past the end of the sum ({size} bytes)")
        metrics.SUM_FETCHED_BYTES.inc(size - request.offset)
        yield from sealed.chunks(chunk_bytes, request.offset)

    @grpc_errors
    def GetRoundStatus(self, request: crypto_pb2.GetRoundStatusRequest,
                       context: grpc.ServicerContext) -> crypto_pb2.RoundStatus:
        """Where a round stands; a site sees its own contribution only, and anyone who names
        a site (`site`) that site's only: one row read, whatever the number of sites."""
        caller = peer_identity(context)
        if caller.role != "site":
            _check_aggregator(caller)
        only = caller.name if caller.role == "site" else request.site
        if only:
            return round_status(*self.store.status_of(request.federation, request.round, only))
        return round_status(self.store.status(request.federation, request.round))


# Every setting of `ucadi serve crypto --config FILE`; UCADI_SERVER__<KEY> overrides.
DEFAULTS: dict[str, Any] = {
    "server": {
        "address": "127.0.0.1:7444",
        "metrics_address": "127.0.0.1:9101",
        # Plaintext gRPC health-only port for Kubernetes probes ("" = none).
        "health_address": "",
        "tls_dir": "",
        # keys.sqlite and the per-round accumulators.
        "state_dir": "var/crypto",
    },
}


def run_crypto_service(state_dir: Path, address: str, tls: TLSFiles,
                       metrics_address: str | None = "127.0.0.1:0",
                       port_file: Path | None = None,
                       health_address: str | None = None) -> RunningServer:
    """Start the key and sum services on one mTLS gRPC server with state under state_dir."""
    state_dir = Path(state_dir)
    keys = KeyStore(state_dir / "keys.sqlite")
    sums = SumStore(state_dir / "sums")

    def register(server: grpc.Server) -> None:
        crypto_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(keys), server)
        crypto_pb2_grpc.add_SumServiceServicer_to_server(SumServicer(sums, keys), server)
    return serve(register, service_names=SERVICE_NAMES, address=address, tls=tls,
                 metrics_address=metrics_address, port_file=port_file,
                 health_address=health_address)


# flag -> (section, key) of DEFAULTS it overrides
FLAG_SETTINGS = {flag: ("server", flag)
                 for flag in ("state_dir", "address", "tls_dir", "metrics_address")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of the crypto service (each overrides the config file)."""
    parser.add_argument("--config", type=Path, help="YAML config file (settings: DEFAULTS)")
    parser.add_argument("--state-dir", type=Path,
                        help="folder for keys.sqlite and the round accumulators")
    parser.add_argument("--address", help="HOST:PORT to listen on (port 0: OS-assigned)")
    parser.add_argument("--tls-dir", type=Path,
                        help="folder with ca.crt, tls.crt, tls.key (`ucadi pki issue`)")
    parser.add_argument("--metrics-address",
                        help="HOST:PORT of the Prometheus /metrics endpoint ('' to disable)")
    parser.add_argument("--port-file", type=Path, default=None,
                        help="write 'grpc_port metrics_port' here once listening")


def from_args(args: argparse.Namespace) -> RunningServer:
    """Start the service from the config file and the flags that override it."""
    config = load_config(DEFAULTS, args.config)
    for flag, (section, key) in FLAG_SETTINGS.items():
        if getattr(args, flag, None) is not None:
            config[section][key] = str(getattr(args, flag))
    server = config["server"]
    if not server["tls_dir"]:
        raise UcadiError("the crypto service needs mutual TLS: set server.tls_dir or --tls-dir")
    return run_crypto_service(Path(server["state_dir"]), server["address"],
                              TLSFiles.from_dir(Path(server["tls_dir"])),
                              server["metrics_address"] or None, args.port_file,
                              server["health_address"] or None)


def main(argv: list[str] | None = None) -> int:
    """Run the crypto service until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        running = from_args(parser.parse_args(argv))
    except UcadiError as exc:
        print(f"crypto service: error: {exc}", file=sys.stderr)
        return 2
    wait_for_stop_signal()
    running.stop(2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
