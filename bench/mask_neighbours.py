"""SecAgg+'s sparse neighbour graph against the complete graph (issue 21): one site's masking
messages and masking compute per round, for n = 10, 100 and 1000 sites, in memory.

`python -m bench.mask_neighbours [--values V] [--out DIR]` (also `make bench BENCH_ARGS="--only
neighbours"`). For each n, the complete graph (k = n - 1, t a majority of n) and "auto"
(ucadi.lwe.neighbours.choose_neighbours: Bell et al.'s k and t), one measured site does a
round's masking work with the production functions:
- pairing: check every key-set site's custodian-certified identity, draw the graph (O(n) in
  both graphs: the graph is drawn from the whole key set, docs/security.md);
- shares: split its two secrets t of (k + 1) and seal a share pair for each holder;
- open: open the k + 1 share pairs its holders sealed for it;
- masks: expand and add its self-mask and one pairwise mask per neighbour over V coefficients
  (0.73 M: the papers' model), the update-independent part a site runs while it trains;
- answer: its unmasking answer with one neighbour dropped.
Bytes: what the site sends (advertisement, sealed share pairs, answer) and receives (the key
set's keys and identities, the share pairs sealed for it), as payload (no gRPC framing).
Each step is timed best of `repeats` (3; run on a shared machine, the best is the least
disturbed). The other
sites' share pairs for the measured site are sealed with seal_share_pair directly, so n
sites' identity checks are not repeated n times.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ucadi.lwe.custodian import certify_site, generate_custodian_key
from ucadi.lwe.mask_round import key_set_digest, seal_share_pair
from ucadi.lwe.masking import (
    MaskingRound,
    SharePair,
    SitePairing,
    answer_unmasking,
    default_threshold,
    generate_round_keys,
)
from ucadi.lwe.neighbours import choose_neighbours
from ucadi.lwe.params import PARAMETER_SETS
from ucadi.lwe.shamir import SHARE_BYTES

SITE_COUNTS = (10, 100, 1000)
VALUES = 730_000
PARAMS = PARAMETER_SETS["rlwe-n4096-q56"]


def _best(work: Any, repeats: int) -> tuple[Any, float]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return result, best


def measure(n: int, graph: str, values: int, repeats: int) -> dict[str, Any]:
    """One site's masking messages and compute in a round of n sites ("complete" or "auto")."""
    k, t = (0, default_threshold(n)) if graph == "complete" else choose_neighbours(n)
    names = tuple(f"site{i:04d}" for i in range(n))
    context = MaskingRound("bench", bytes(16), 1, names, t, k)
    custodian = generate_custodian_key()
    identity_keys = {s: X25519PrivateKey.generate() for s in names}
    keys = {s: generate_round_keys() for s in names}
    advertised = {s: keys[s].public(certify_site(custodian, s, identity_keys[s].public_key()
                                                 .public_bytes_raw())) for s in names}
    me = names[0]

    def pair() -> SitePairing:
        pairing = SitePairing(context, me, keys[me], advertised, identity_keys[me],
                              custodian.public_key)
        _ = pairing.graph  # drawn from the key-set digest
        return pairing

    pairing, pairing_s = _best(pair, repeats)
    holders = sorted(pairing.graph.holders(me))
    neighbours = sorted(pairing.graph.neighbours(me))
    sealed, shares_s = _best(pairing.share_messages, repeats)
    dummy = SharePair(1, 2)
    digest = key_set_digest(context, advertised)
    incoming = {h: seal_share_pair(context, keys[h], identity_keys[h], h, me, advertised, dummy,
                                   digest) for h in holders}
    _, open_s = _best(lambda: pairing.open_all(incoming), repeats)

    def expand() -> np.ndarray:
        total = np.zeros(values, dtype=np.uint64)
        pairing.mask_body(total, names, PARAMS)
        return total

    _, masks_s = _best(expand, repeats)
    gone = {neighbours[0]}
    survivors = set(names) - gone
    received = {h: dummy for h in holders}
    answer, answer_s = _best(lambda: answer_unmasking(context, me, received, survivors, gone,
                                                      graph=pairing.graph), repeats)
    advert_bytes = sum(len(part) for part in (advertised[me].share_public,
                                              advertised[me].mask_public,
                                              advertised[me].identity))
    sent = (advert_bytes + sum(len(s) + len(b) for s, b in sealed.items())
            + SHARE_BYTES * (len(answer.self_seeds) + len(answer.mask_keys)))
    key_set = sum(len(s) + advert_bytes for s in names)
    received_bytes = key_set + sum(len(s) + len(b) for s, b in incoming.items())
    return {"sites": n, "graph": graph, "k": len(neighbours), "t": t, "values": values,
            "share_pairs_sent": len(sealed), "share_pairs_received": len(incoming),
            "pairwise_masks": len(neighbours), "bytes_sent": sent,
            "bytes_received": received_bytes, "key_set_bytes": key_set,
            "pairing_s": pairing_s, "shares_s": shares_s, "open_s": open_s,
            "masks_s": masks_s, "answer_s": answer_s,
            "compute_s": pairing_s + shares_s + open_s + masks_s + answer_s,
            "repeats": repeats}


def run_all(values: int, repeats: int, site_counts=SITE_COUNTS) -> list[dict[str, Any]]:
    rows = []
    for n in site_counts:
        for graph in ("complete", "auto"):
            print(f"  n = {n:>4}, {graph:<8} ...", end="", flush=True)
            row = measure(n, graph, values, repeats)
            rows.append(row)
            print(f" k = {row['k']:>3}, t = {row['t']:>3}: {row['share_pairs_sent']:>4} share "
                  f"pairs, sent {row['bytes_sent'] / 1024:7.1f} KiB, received "
                  f"{row['bytes_received'] / 1024:7.1f} KiB, compute {row['compute_s']:7.2f} s "
                  f"(masks {row['masks_s']:.2f} s, shares {row['shares_s']:.2f} s)", flush=True)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| n | graph | k | t | share pairs sent / received | pairwise masks | KiB sent | "
             "KiB received (of which the key set) | pairing s | shares s | open s | masks s | "
             "site compute s |", "|" + "---|" * 13]
    for r in rows:
        lines.append(
            f"| {r['sites']} | {r['graph']} | {r['k']} | {r['t']} | {r['share_pairs_sent']} / "
            f"{r['share_pairs_received']} | {r['pairwise_masks']} | {r['bytes_sent'] / 1024:.1f} "
            f"| {r['bytes_received'] / 1024:.1f} ({r['key_set_bytes'] / 1024:.1f}) | "
            f"{r['pairing_s']:.3f} | {r['shares_s']:.3f} | {r['open_s']:.3f} | "
            f"{r['masks_s']:.2f} | {r['compute_s']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for graph, marker in (("complete", "o"), ("auto", "s")):
        chosen = [r for r in rows if r["graph"] == graph]
        ns = [r["sites"] for r in chosen]
        axes[0].plot(ns, [r["bytes_sent"] / 1024 for r in chosen], marker=marker,
                     label=f"{graph}: sent")
        axes[0].plot(ns, [r["bytes_received"] / 1024 for r in chosen], marker=marker,
                     linestyle="--", label=f"{graph}: received")
        axes[1].plot(ns, [r["compute_s"] for r in chosen], marker=marker, label=graph)
    for axis, title in ((axes[0], "masking messages per site per round (KiB)"),
                        (axes[1], f"a site's masking compute per round (s, "
                                  f"{rows[0]['values']:,} values)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("sites in the round (n)")
        axis.set_title(title, fontsize=9)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def run(quick: bool) -> list[str]:
    """`python -m bench` entry: n = 10 and 100 (quick: 10), 0.73 M values (quick: 50 000)."""
    rows = run_all(50_000 if quick else VALUES, 1 if quick else 3,
                   (10,) if quick else (10, 100))
    print(markdown(rows))
    return [f"neighbour graph, n = {r['sites']}, {r['graph']} (k = {r['k']}, t = {r['t']}): "
            f"{r['bytes_sent'] / 1024:.1f} KiB sent, {r['bytes_received'] / 1024:.1f} KiB "
            f"received, site compute {r['compute_s']:.2f} s per round" for r in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", type=int, default=VALUES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sites", type=int, nargs="*", default=list(SITE_COUNTS))
    parser.add_argument("--out", type=Path, help="write neighbours.{json,md,png} here")
    args = parser.parse_args()
    if args.values < 1 or args.repeats < 1 or any(n < 3 for n in args.sites):
        parser.error("--values and --repeats must be >= 1, every --sites >= 3")
    rows = run_all(args.values, args.repeats, tuple(args.sites))
    table = markdown(rows)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {"command": "python -m bench.mask_neighbours " + " ".join(
            f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in (("values", args.values), ("repeats", args.repeats),
                         ("sites", args.sites))), "cpus": os.cpu_count(),
            "load_average": os.getloadavg()}
        (args.out / "neighbours.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                             indent=2) + "\n")
        (args.out / "neighbours.md").write_text(table)
        plot(rows, args.out / "neighbours.png")
        print(f"wrote {args.out}/neighbours.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
