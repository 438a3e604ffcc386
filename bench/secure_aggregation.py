"""Pairwise masks (issue 21) against the shared-key mode and plaintext FedAvg, in one run.

For 3 and 10 sites at 0.73 M values (the papers' 3D-DenseNet), in memory (no processes, no
files: `bench.round_overhead` measures the shared-key mode through the real services), one
round of each mode:
- plaintext: the weighted sum of the float32 updates;
- shared key: every site encodes, tags and encrypts its update, the sum adds the bodies, a site
  decrypts and checks the sum (the integrity tag);
- pairwise masks: the same, plus each site's round keys, Shamir shares sealed for every site
  and opened, its masks added to its body, the survivors' unmasking answers, the central
  side's recovery and unmasking; with one site dropped after sharing keys when asked.
Per-site steps are timed for every site and averaged (sites work in parallel), each step's
best of REPEATS rounds is kept; a round's
compute is one site's work + the central side's + one site's decryption. A site's masks do
not depend on its update, so a site expands them while it trains (as it prepares a*s + e
today); "on the critical path" counts one addition for them, "all" counts their expansion.
Bytes per value are the ciphertext's; the masking messages are a few KB per site per round,
printed beside them. Then the round overhead through the real services (bench.round_overhead's
site processes, aggregator and sum service): shared key, pairwise masks and plaintext in
interleaved blocks, at 3 and 10 sites.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ucadi.lwe import FixedPointCodec, add, decrypt, encrypt, generate_secret_key
from ucadi.lwe.custodian import certify_site, generate_custodian_key
from ucadi.lwe.integrity import SumCheck, encode_site_update
from ucadi.lwe.masking import (
    MaskingRound,
    SitePairing,
    answer_unmasking,
    default_threshold,
    generate_round_keys,
    recover_round_secrets,
    unmask_sum,
    unmasking_terms,
)
from ucadi.lwe.scheme import Ciphertext
from ucadi.lwe.serialization import from_bytes, serialized_size, to_bytes

VALUES = 730_000
LARGE_VALUES = 46_000_000  # the 3D ResNet-50 (bench.round_overhead's 46 M model)
SITE_COUNTS = (3, 10)
GOAL_UPLOAD_X_FLOAT32, GOAL_DOWNLOAD_X_FLOAT32, GOAL_ROUND_X_SHARED_KEY = 2.0, 1.5, 1.3
REPEATS = 3
LAYOUT = hashlib.sha256(b"bench-secure-aggregation").digest()


@dataclass
class RoundFigures:
    """Seconds of one round's steps in one mode."""

    site: float = 0.0          # one site: encode, tag, encrypt (and mask)
    site_prepared: float = 0.0  # of which could run during training (mask expansion, keys)
    central: float = 0.0       # the sum (and unmasking)
    decrypt: float = 0.0       # one site: decrypt and check the sum
    control_bytes: int = 0     # masking messages per site per round

    @property
    def critical(self) -> float:
        """Compute on the round's critical path."""
        return self.site - self.site_prepared + self.central + self.decrypt

    @property
    def total(self) -> float:
        """All compute of a round."""
        return self.site + self.central + self.decrypt


def _timed(work):  # noqa: ANN001, ANN202 - a tiny local helper
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def _encrypt(secret, codec, vector, weight, site):  # noqa: ANN001, ANN202
    update = encode_site_update(vector, weight, codec, secret, 1, site)
    return encrypt(secret, update, layout_hash=LAYOUT, round_number=1)


def measure(sites: int, dropped: int, values: int = VALUES
            ) -> tuple[RoundFigures, RoundFigures, float, int, int]:
    """(shared key, masked, plaintext seconds, upload bytes, sum bytes) for one round of
    `values` values per site."""
    secret = generate_secret_key()
    codec = FixedPointCodec.for_parameters(secret.params)
    names = [f"site{i:02d}" for i in range(sites)]
    rng = np.random.default_rng(sites)
    vectors = {n: rng.normal(0, 0.05, values).astype(np.float32) for n in names}
    weights = {n: 10 + i for i, n in enumerate(names)}

    _, plain = _timed(lambda: sum(weights[n] * vectors[n].astype(np.float64) for n in names))

    shared = RoundFigures()
    cts, times = {}, []
    for n in names:
        cts[n], seconds = _timed(lambda n=n: _encrypt(secret, codec, vectors[n], weights[n], n))
        times.append(seconds)
    shared.site = statistics.mean(times)
    summed, shared.central = _timed(lambda: from_bytes(to_bytes(add(list(cts.values())))))
    _, shared.decrypt = _timed(lambda: _check(secret, summed, names, values))
    upload_bytes = serialized_size(cts[names[0]].header)
    sum_bytes = serialized_size(summed.header)

    masked = RoundFigures()
    context = MaskingRound("bench", secret.key_id, 1, tuple(names), default_threshold(sites))
    keys = {n: generate_round_keys() for n in names}
    custodian = generate_custodian_key()  # certifies each site's long-term key, as `keys wrap`
    identity_keys = {n: X25519PrivateKey.generate() for n in names}
    advertised = {n: k.public(certify_site(custodian, n, identity_keys[n].public_key()
                                           .public_bytes_raw())) for n, k in keys.items()}
    pairings = {n: SitePairing(context, n, keys[n], advertised, identity_keys[n],
                               custodian.public_key) for n in names}
    sealed, share_times = {}, []
    for n in names:
        sealed[n], seconds = _timed(pairings[n].share_messages)
        share_times.append(seconds)
    received, open_times = {}, []
    for r in names:
        received[r], seconds = _timed(lambda r=r: pairings[r].open_all(
            {s: sealed[s][r] for s in names}))
        open_times.append(seconds)
    survivors = set(names[dropped:])
    uploads, mask_times, add_times = {}, [], []
    for n in sorted(survivors):
        ct = cts[n]
        total, seconds = _timed(lambda n=n, size=ct.body.size: _expand_all(
            pairings[n], names, size, secret.params))
        mask_times.append(seconds)
        body, seconds = _timed(lambda ct=ct, total=total: (ct.body + total) & np.uint64(
            secret.params.modulus_mask))
        add_times.append(seconds)
        uploads[n] = Ciphertext(ct.header, ct.seeds, body)
    masked.site_prepared = (statistics.mean(share_times) + statistics.mean(open_times)
                            + statistics.mean(mask_times))
    masked.site = shared.site + masked.site_prepared + statistics.mean(add_times)

    def unmask() -> Ciphertext:
        summed = add([uploads[n] for n in sorted(survivors)])  # as the shared-key sum
        gone = set(names) - survivors
        answers = {n: answer_unmasking(context, n, received[n], survivors, gone)
                   for n in sorted(survivors)}
        secrets = recover_round_secrets(context, answers, survivors, gone, advertised)
        body = summed.body.copy()
        unmask_sum(body, unmasking_terms(context, secrets, advertised, survivors), secret.params)
        return from_bytes(to_bytes(Ciphertext(summed.header, summed.seeds, body)))

    unmasked, masked.central = _timed(unmask)
    slots, masked.decrypt = _timed(lambda: _check(secret, unmasked, sorted(survivors), values))
    masked.control_bytes = (64 + sum(len(b) for b in sealed[names[0]].values())
                            + 66 * sites)
    return shared, masked, plain, upload_bytes, sum_bytes


def _best(figures: list[RoundFigures]) -> RoundFigures:
    """Each step's best time over the repeats (other processes share the cores)."""
    best = RoundFigures(control_bytes=figures[0].control_bytes)
    for name in ("site", "site_prepared", "central", "decrypt"):
        setattr(best, name, min(getattr(f, name) for f in figures))
    return best


def _expand_all(pairing: SitePairing, names: list[str], count: int, secret_params) -> np.ndarray:  # noqa: ANN001
    """A site's whole mask, made ahead (while it trains): added to its body at upload."""
    total = np.zeros(count, dtype=np.uint64)
    pairing.mask_body(total, names, secret_params)
    return total


def _check(secret, summed: Ciphertext, contributors, values: int) -> np.ndarray:  # noqa: ANN001
    slots = decrypt(secret, summed)
    check = SumCheck(secret, 1, contributors)
    check.add(0, slots[:values + 1])
    check.verify(slots[values + 1:])
    return slots


def measure_services(site_count: int, blocks: int, rounds: int, large: bool = False
                     ) -> list[str]:
    """Round overhead through the real services (bench.round_overhead: site processes, the
    aggregator and the sum service on loopback, mutual TLS, SQLite) at 0.73 M values (46 M:
    `large`): shared key, pairwise masks and plaintext, in interleaved blocks; printed and
    summarised."""
    from bench.round_overhead import MODELS, measure_round_seconds

    label, arch, preset = MODELS[1 if large else 0]
    size = label.split(" (")[0]
    sites = [f"site-{i:02d}" for i in range(1, site_count + 1)]
    modes = {"shared key": ("rlwe-n4096-q56", False), "pairwise masks": ("rlwe-n4096-q56", True),
             "plaintext": (None, False)}
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    phases: dict[str, dict[str, float]] = {}
    for _ in range(blocks):
        for mode, (parameter_set, masked) in modes.items():
            block, phases[mode] = measure_round_seconds(arch, preset, parameter_set, rounds,
                                                        sites=sites, masked=masked)
            seconds[mode] += block
    medians = {mode: statistics.median(values) for mode, values in seconds.items()}
    for mode, values in seconds.items():
        print(f"{site_count} sites, {size} values, {mode}: "
              + ", ".join(f"{v:.2f}" for v in values)
              + f" s/round (median {medians[mode]:.2f}); per site (last block): "
              + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in phases[mode].items()),
              flush=True)
    ratio = medians["pairwise masks"] / medians["shared key"]
    goal = "" if large else (f" (goal <= {GOAL_ROUND_X_SHARED_KEY}: "
                             f"{'met' if ratio <= GOAL_ROUND_X_SHARED_KEY else 'NOT met'})")
    return [f"pairwise masks through the services, {site_count} sites, {size} values: round "
            f"overhead {medians['pairwise masks']:.2f} s vs shared key "
            f"{medians['shared key']:.2f} s: {ratio:.2f}x{goal}; plaintext "
            f"{medians['plaintext']:.2f} s "
            f"({medians['pairwise masks'] / medians['plaintext']:.2f}x); {blocks} block(s) of "
            f"{rounds} rounds"]


def measure_in_memory(sites: int, dropped: int, values: int, repeats: int) -> str:
    """One site count and dropout in memory, best of `repeats`: printed; the goal line."""
    runs = [measure(sites, dropped, values) for _ in range(repeats)]
    shared, masked = (_best([r[i] for r in runs]) for i in (0, 1))
    plain = min(r[2] for r in runs)
    up, down = runs[0][3], runs[0][4]
    ratio_critical = masked.critical / shared.critical
    ratio_total = masked.total / shared.total
    print(f"{sites} sites, {dropped} dropped, {values:,} values:")
    for name, f in (("shared key", shared), ("pairwise masks", masked)):
        print(f"  {name:<15} site {f.site:6.3f} s (of which during training "
              f"{f.site_prepared:6.3f} s)  central {f.central:6.3f} s  decrypt "
              f"{f.decrypt:6.3f} s  critical path {f.critical:6.3f} s  all "
              f"{f.total:6.3f} s")
    print(f"  plaintext sum {plain:6.3f} s; masked / shared key: critical path "
          f"{ratio_critical:.2f}x, all compute {ratio_total:.2f}x; upload "
          f"{up / (4 * values):.2f}x float32 in both modes, download "
          f"{down / (4 * values):.2f}x; masking messages {masked.control_bytes:,} B per "
          "site per round; 3 extra round trips (1 after the uploads)", flush=True)
    return (f"pairwise masks, {sites} sites, {dropped} dropped, {values / 1e6:.2f} M values: "
            f"upload {up / (4 * values):.2f}x float32 (goal <= {GOAL_UPLOAD_X_FLOAT32}), download "
            f"{down / (4 * values):.2f}x (goal <= {GOAL_DOWNLOAD_X_FLOAT32}), compute on the "
            f"critical path {ratio_critical:.2f}x the shared-key mode (all compute "
            f"{ratio_total:.2f}x; goal <= {GOAL_ROUND_X_SHARED_KEY} for the round, "
            "through the services)")


def run(quick: bool) -> list[str]:
    """Both site counts, no dropout and one dropout, in memory at 0.73 M values (and 46 M
    unless quick); then through the services (quick: 3 sites at 0.73 M only; else 3 and 10
    sites at 0.73 M and 3 sites at 46 M); print figures, return goal lines."""
    summary = []
    for values in (VALUES,) if quick else (VALUES, LARGE_VALUES):
        for sites in SITE_COUNTS:
            for dropped in (0, 1):
                repeats = 1 if quick or values == LARGE_VALUES else REPEATS
                summary.append(measure_in_memory(sites, dropped, values, repeats))
    summary += measure_services(3, 1 if quick else 3, 4 if quick else 6)
    if not quick:
        summary += measure_services(10, 2, 4)
        summary += measure_services(3, 1, 2, large=True)
    return summary


def main() -> int:
    """One part of the benchmark: `python -m bench.secure_aggregation --values 46M --sites 3
    --services` (the whole benchmark: `python -m bench --only masks`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--values", choices=["0.73M", "46M"], default="0.73M")
    parser.add_argument("--sites", type=int, nargs="+", default=list(SITE_COUNTS))
    parser.add_argument("--services", action="store_true",
                        help="through the real services (else in memory)")
    parser.add_argument("--blocks", type=int, default=1, help="services: interleaved blocks")
    parser.add_argument("--rounds", type=int, default=2, help="services: rounds per block")
    parser.add_argument("--repeats", type=int, default=1, help="in memory: best of this many")
    args = parser.parse_args()
    large = args.values == "46M"
    summary = []
    for sites in args.sites:
        if args.services:
            summary += measure_services(sites, args.blocks, args.rounds, large=large)
        else:
            summary += [measure_in_memory(sites, dropped, LARGE_VALUES if large else VALUES,
                                          args.repeats) for dropped in (0, 1)]
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
