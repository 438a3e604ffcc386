"""`ucadi status --aggregator HOST:PORT --tls-dir DIR`: a federation's state as its operator
sees it outside Kubernetes: the current round, every site, the last rounds, and what looks
stuck (the same conditions the alerts watch), from the aggregator's GetStatus over mutual TLS."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path
from typing import Any

import grpc

from ucadi.errors import UcadiError
from ucadi.ops.tls import TLSFiles, secure_channel
from ucadi.v1 import federation_pb2, federation_pb2_grpc

# The thresholds of UcadiRoundStuck and UcadiSiteMissingRounds (deploy/prometheus/rules.yaml).
STUCK_GRACE_S = 300.0
MISSED_ROUNDS = 3
RECENT_ROUNDS = 5


def _state(value: int) -> str:
    return federation_pb2.RoundState.Name(value).removeprefix("ROUND_STATE_").lower()


def _ago(unix: float, now: float) -> str:
    if unix <= 0:
        return "never"
    seconds = max(0, int(now - unix))
    return f"{seconds // 60} min ago" if seconds >= 120 else f"{seconds} s ago"


def _utc(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def findings(status: Any, now: float) -> list[str]:
    """What an operator should look at: a round past its deadline or sealed with no next
    round, and sites behind by MISSED_ROUNDS or more."""
    found = []
    current = status.current
    state = _state(current.state)
    if state == "collecting" and now - current.deadline_unix > STUCK_GRACE_S:
        found.append(f"round {current.round} has been collecting "
                     f"{int(now - current.deadline_unix)} s past its deadline "
                     f"({len(current.uploaded_sites)} of {len(current.expected_sites)} uploads, "
                     f"min_sites {current.min_sites})")
    sealed = [r for r in status.rounds if r.round == current.round and r.sealed_unix > 0]
    if state == "sealed" and sealed and now - sealed[0].sealed_unix > STUCK_GRACE_S:
        found.append(f"round {current.round} was sealed {int(now - sealed[0].sealed_unix)} s "
                     "ago and no next round opened (are min_sites sites polling?)")
    for site in status.sites:
        behind = current.round - site.last_round
        if site.state == "active" and behind >= MISSED_ROUNDS:
            found.append(f"site {site.site} last uploaded to round {site.last_round}, "
                         f"{behind} rounds behind")
    return found


def report(status: Any, now: float) -> list[str]:
    """The status as lines for a terminal."""
    current = status.current
    lines = [f"federation {status.federation_id}: round {current.round} of "
             f"{status.total_rounds}, {_state(current.state)}, global version "
             f"{current.latest_version}"]
    if _state(current.state) == "collecting":
        lines.append(f"  uploads {len(current.uploaded_sites)} of {len(current.expected_sites)}"
                     f" expected (min_sites {current.min_sites}); deadline "
                     f"{_utc(current.deadline_unix)}")
    lines.append("sites:")
    for site in status.sites:
        auc = f"  AUC {site.metrics.auc:.3f}" if site.HasField("metrics") else ""
        lines.append(f"  {site.site:<20} {site.state:<7} last round {site.last_round:<4} "
                     f"seen {_ago(site.last_seen_unix, now)}  {site.train_cases} cases{auc}")
    lines.append("last rounds:")
    for summary in list(status.rounds)[-RECENT_ROUNDS:]:
        took = (f"{summary.sealed_unix - summary.opened_unix:.0f} s"
                if summary.sealed_unix > 0 else "open")
        lines.append(f"  round {summary.round:<4} {_state(summary.state):<10} "
                     f"{len(summary.uploaded_sites)}/{len(summary.expected_sites)} sites  "
                     f"{took}")
    problems = findings(status, now)
    lines += [f"STUCK: {problem}" for problem in problems] or ["nothing stuck"]
    return lines


def _status_command(args: argparse.Namespace) -> int:
    tls = TLSFiles.from_dir(Path(args.tls_dir))
    with secure_channel(args.aggregator, tls) as channel:
        try:
            status = federation_pb2_grpc.FederationServiceStub(channel).GetStatus(
                federation_pb2.GetStatusRequest(), timeout=args.timeout)
        except grpc.RpcError as exc:
            raise UcadiError(f"aggregator {args.aggregator}: {exc.code().name}: "
                             f"{exc.details()}") from exc
    now = time.time()
    print("\n".join(report(status, now)))
    return 1 if findings(status, now) else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `ucadi status`."""
    parser = subparsers.add_parser(
        "status", help="a federation's rounds, sites and stuck states, from its aggregator",
        description="Show the aggregator's federation status: the current round, each site, "
                    "the last rounds and what looks stuck; exit 0 when nothing is stuck, 1 "
                    "when something is (or the aggregator cannot be asked).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--aggregator", required=True, metavar="HOST:PORT",
                        help="the aggregator's gRPC address")
    parser.add_argument("--tls-dir", required=True,
                        help="a kit from the federation CA (ca.crt, tls.crt, tls.key), e.g. "
                             "the operator's (`ucadi pki issue --role operator`)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    parser.set_defaults(func=_status_command)
