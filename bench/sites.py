"""Load generator: one encrypted round with N simulated sites on this machine (issue 25).

`python -m bench.sites --sites N --values V` starts the crypto service (key service + sum
service) and the aggregator as real processes, issues N site certificates from the federation
CA, and runs the N sites as real gRPC clients spread over a few processes (`--processes`), each
running at most `--concurrency` sites at a time. Every site has its own certificate, X25519 key
pair (registered with the key service, pinned and wrapped by the custodian as `ucadi keys wrap`
does), seed ledger and round seed. No training: each site

1. obtains the federation's LWE secret and joins;
2. waits for round 1 to open, encrypts its synthetic update of V values under its own round
   seed (its own mask a*s + e: a genuine separate encryption) and uploads it over gRPC (to the
   sum service, recorded at the aggregator, as deployed sites do);
3. waits for the seal, asks the aggregator's status for the round's contributors (as the
   trainer does), downloads the global version and decrypts it;
4. checks the result against the expected FedAvg bit for bit.

What is shared, so 1,000 sites fit on 2 cores: site k's update is template + k * delta, both
vectors on the codec's grid (multiples of 2^-16), weight 1 + k % 5, so each update encodes
exactly and the expected FedAvg is (W * template + K * delta) / W with W = sum of weights and
K = sum of weight * k, computed once: a missing, doubled or altered update changes it. The
decryption product of the round's sum ((sum of the expected sites' a) * s, which the trainer
makes while it trains) is made once per process and handed to each of its sites' ciphers;
each site still decrypts its own downloaded copy and checks the integrity tags.

Measured: round open -> seal (the aggregator's status), last upload start -> seal, seal -> last
download, per-site times, central CPU seconds and peak memory (aggregator, crypto service),
state files and SQLite rows, GetStatus and GetRound reply sizes. `--json` writes them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.process_sampling import SAMPLE_S, Sampler, peak_rss_bytes, state_counts, status_bytes
from bench.sites_report import plot, report, verdicts

# --values: a named size, or the exact value count of one of these models.
VALUE_SIZES = {"small": ("densenet3d", "cpu-small"), "0.73M": ("densenet3d", "paper"),
               "46M": ("resnet3d50", "paper")}
PARAMETER_SET = "rlwe-n4096-q56"  # the default set: exact sums for up to 1,000 sites
FEDERATION = "scale"
FRAC_BITS = 16  # the default set's codec (ucadi.lwe.codec.DEFAULT_CODECS)


def site_names(count: int) -> list[str]:
    """The simulated sites' names (certificate common names)."""
    return [f"site-{k:04d}" for k in range(count)]


def site_weight(index: int) -> int:
    """Site `index`'s FedAvg weight."""
    return 1 + index % 5


def grid_vectors(value_count: int) -> tuple[np.ndarray, np.ndarray]:
    """(template, delta) as integers on the codec's grid (units of 2^-16): site k's update is
    (template + k * delta) * 2^-16, exact in float32 and float64 for k < 4096."""
    rng = np.random.default_rng(25)
    template = rng.integers(-(1 << 14), 1 << 14, value_count, dtype=np.int64)
    delta = rng.integers(-2, 3, value_count, dtype=np.int64)
    return template, delta


def site_update(index: int, template: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Site `index`'s synthetic update (float32, as a model holds it)."""
    return ((template + index * delta) * 2.0 ** -FRAC_BITS).astype(np.float32)


def expected_fedavg(indices: list[int], template: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The exact FedAvg of the sites' updates as every site decodes it (float32)."""
    from ucadi.lwe.codec import FixedPointCodec, average_scale, decode_average_into

    total = sum(site_weight(k) for k in indices)
    moment = sum(site_weight(k) * k for k in indices)
    out = np.empty(template.size, dtype=np.float32)
    decode_average_into(total * template + moment * delta,
                        average_scale(FixedPointCodec(FRAC_BITS, 8.0), total), out)
    return out


def resolve_values(text: str) -> tuple[str, str]:
    """(arch, preset) of --values: a name of VALUE_SIZES or one of their exact value counts."""
    if text in VALUE_SIZES:
        return VALUE_SIZES[text]
    counts = {str(model_value_count(*model)): model for model in VALUE_SIZES.values()}
    if text in counts:
        return counts[text]
    raise SystemExit(f"--values {text!r}: expected one of {', '.join(VALUE_SIZES)} or an exact "
                     f"value count of those models ({', '.join(sorted(counts, key=int))})")


def model_value_count(arch: str, preset: str) -> int:
    """Values in the model's parameter layout."""
    from ucadi.model.layout import ParameterLayout, initial_model

    return ParameterLayout.of(initial_model(arch, preset, 2, 0).state_dict()).value_count


# -- the simulated sites (worker processes) -------------------------------------------------
@dataclass
class _Site:
    name: str
    index: int
    client: Any
    cipher: Any
    work: Path
    marks: dict[str, float]


def _worker(names: list[str], pki: str, aggregator: str, crypto: str, root: str,
            concurrency: int, results: Any) -> None:
    """Run `names` in this process; puts ("ok", per-site marks) or ("error", traceback)."""
    try:
        results.put(("ok", _run_sites(names, pki, aggregator, crypto, Path(root),
                                      concurrency)))
    except Exception:  # the parent reports it instead of waiting forever
        results.put(("error", traceback.format_exc()))


def _run_sites(names: list[str], pki: str, aggregator: str, crypto: str, root: Path,
               concurrency: int) -> dict[str, dict[str, float]]:
    import torch

    from services.trainer.cipher import SiteCipher
    from services.trainer.client import FederationClient
    from services.trainer.keys import obtain_secret
    from ucadi.lwe.custodian import read_custodian_public_key
    from ucadi.ops.tls import TLSFiles

    torch.set_num_threads(1)
    custodian = read_custodian_public_key(Path(pki).parent / "custodian")

    def setup(name: str) -> _Site:
        work = root / "sites" / name / "work"
        tls = TLSFiles.from_dir(Path(pki) / name)
        marks = {"start": time.time()}
        secret = obtain_secret(crypto, tls, work, wait_s=1800, custodian=custodian)
        client = FederationClient(aggregator, tls, sum_target=crypto)
        client.join(site_weight(int(name.split("-")[1])), "bench-sites")
        marks["joined"] = time.time()
        return _Site(name, int(name.split("-")[1]), client, SiteCipher(secret, work / "lwe"),
                     work, marks)

    with ThreadPoolExecutor(concurrency, thread_name_prefix="site") as pool:
        sites = list(pool.map(setup, names))
        value_count = sites[0].client.joined.model.value_count
        template, delta = grid_vectors(value_count)
        product = _Shared()
        list(pool.map(lambda s: _contribute(s, template, delta, product), sites))
        list(pool.map(lambda s: _collect(s, template, delta), sites))
    for site in sites:
        site.client.close()
    return {site.name: site.marks for site in sites}


class _Shared:
    """The round sum's decryption product, made once per process (by the first site that
    needs it) and handed to every site's cipher."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._product: Any = None

    def get(self, secret: Any, slots: int, round_number: int, sites: list[str]) -> Any:
        from ucadi.lwe.prepared import prepare_product, round_seed

        with self._lock:
            if self._product is None:
                self._product = prepare_product(secret, slots, round_number, [
                    round_seed(secret.key_id, FEDERATION, round_number, s) for s in sites])
            return self._product


def _contribute(site: _Site, template: np.ndarray, delta: np.ndarray, shared: _Shared) -> None:
    from services.trainer.cipher import RoundContext
    from ucadi.learn.server_opt import announced_optimization
    from ucadi.lwe.integrity import update_slot_count
    from ucadi.v1 import federation_pb2

    client, joined = site.client, site.client.joined
    info = client.get_round()
    while not (info.round == 1 and info.awaiting_caller):
        info = client.get_round(info.round, info.state, wait_s=5.0)
    site.marks["opened_seen"] = time.time()
    vector = site_update(site.index, template, delta)
    # Its own mask a*s + e under its own round seed (claimed in its ledger), made now.
    site.cipher.prepare(vector.size, RoundContext(joined.federation_id, 1, site.name, ()))
    path = site.work / "update-1.bin"
    site.cipher.encrypt_to_file(vector, weight=site_weight(site.index), round_number=1,
                                layout_hash=joined.model.layout_hash, path=path,
                                site=site.name)
    site.marks["encrypted"] = time.time()
    client.upload_update(federation_pb2.UpdateHeader(
        round=1, base_version=info.base_version, parameter_set=joined.encryption.parameter_set,
        key_id=joined.encryption.key_id, layout_hash=joined.model.layout_hash,
        num_samples=site_weight(site.index), local_epochs=1,
        optimizer_digest=announced_optimization(joined.model.optimizer_json).digest), path)
    path.unlink()
    site.marks["uploaded"] = time.time()
    # As the trainer makes it while it trains: here once per process, shared.
    site.cipher.use_product(shared.get(site.cipher.secret, update_slot_count(vector.size), 1,
                                       list(info.expected_sites)))


def _collect(site: _Site, template: np.ndarray, delta: np.ndarray) -> None:
    from services.trainer.cipher import AnnouncedSum

    client = site.client
    info = client.get_round()
    while info.latest_version < 1:
        info = client.get_round(info.round, info.state, wait_s=5.0)
    site.marks["seal_seen"] = time.time()
    sites = client.round_sites(1)  # the round's contributors, as the trainer asks for them
    contributors, known = sites.uploaded, set(sites.known)
    announced = AnnouncedSum(FEDERATION, 1, site.name, contributors,
                             tuple(sorted(known - set(contributors))), len(contributors))
    site.marks["status"] = time.time()
    path, checked = client.download_global(1, site.work / "v1.bin", 1 << 40)
    site.marks["downloaded"] = time.time()
    average = site.cipher.decrypt_average(path, client.joined.model.layout_hash, announced,
                                          checked)
    path.unlink()
    site.marks["decrypted"] = time.time()
    expected = expected_fedavg([int(s.split("-")[1]) for s in contributors], template, delta)
    if len(contributors) != len(known) or not np.array_equal(average, expected):
        raise RuntimeError(f"{site.name}: the decrypted global version is not the exact FedAvg "
                           f"of {len(known)} sites ({len(contributors)} contributed; "
                           f"{int(np.sum(average != expected))} values differ)")


# -- the central side: processes, sampling, counts ---------------------------------------------
def run_point(sites: int, values: str, processes: int = 4, concurrency: int = 8,
              root: Path | None = None, replicas: int = 1) -> dict[str, Any]:
    """One round with `sites` simulated sites; the measurements (raises if any site fails).
    `replicas` > 1: sharded sum-service replicas (the sites then upload and download through
    the aggregator, which cuts each ciphertext into the replicas' block ranges)."""
    if sites < 2:
        raise SystemExit(f"--sites {sites}: at least 2 sites make a federation")
    if processes < 1 or concurrency < 1:
        raise SystemExit("--processes and --concurrency must be at least 1")
    if replicas < 1:
        raise SystemExit(f"--replicas {replicas}: at least 1 sum service")
    arch, preset = resolve_values(values)
    if root is None:
        with tempfile.TemporaryDirectory(prefix="ucadi-scale-") as tmp:
            return run_point(sites, values, processes, concurrency, Path(tmp), replicas)
    from ucadi.demo.federation import FederationPlan, LocalFederation

    names = site_names(sites)
    plan = FederationPlan(root=root, manifest=root / "unused.csv", sites=names, rounds=1,
                          min_sites=sites, arch=arch, model_preset=preset,
                          parameter_set=PARAMETER_SET, federation_id=FEDERATION,
                          round_timeout_s=7200.0, liveness_timeout_s=7200.0,
                          recipe={"total_epochs": 1, "warmup_epochs": 0},
                          sum_replicas=replicas,
                          # Its sites upload without the masking phases: the shared-key mode.
                          pairwise_masks=False)
    federation = LocalFederation(plan)
    started = time.time()
    federation.provision()
    provisioned = time.time()
    print(f"[scale] {sites} sites: {len(names)} certificates issued in "
          f"{provisioned - started:.1f} s", flush=True)
    federation.create_key()
    context = mp.get_context("spawn")
    results = context.Queue()
    sampler = None
    try:
        federation.start_crypto()
        federation.start_sum_replicas()
        federation.start_aggregator()
        central = ["aggregator", "crypto", *(f"crypto-{i}" for i in range(2, replicas + 1))]
        pids = {name: federation.processes[name].process.pid for name in central}
        sampler = Sampler(pids)
        idle = time.time()
        shares = [names[i::processes] for i in range(min(processes, sites))]
        workers = [context.Process(target=_worker, args=(
            share, str(federation.pki), federation.processes["aggregator"].target,
            federation.processes["crypto"].target, str(root), concurrency, results))
            for share in shares]
        for worker in workers:
            worker.start()
        federation.approve_sites(names, timeout=1800.0)
        approved = time.time()
        print(f"[scale] keys wrapped for {sites} sites in {approved - idle:.1f} s", flush=True)
        marks: dict[str, dict[str, float]] = {}
        for _ in workers:
            kind, outcome = results.get(timeout=7200)
            if kind == "error":
                raise RuntimeError(f"a site process failed:\n{outcome}")
            marks.update(outcome)
            print(f"[scale] {len(marks)} of {sites} sites hold the exact FedAvg", flush=True)
        for worker in workers:
            worker.join(60)
        status = federation.status()
        # What a site asks for each global version (round 1, compact site sets): the first
        # time, carrying the roster, and then with its digest current.
        from ucadi.v1 import federation_pb2

        first = federation.status(federation_pb2.GetStatusRequest(
            round=1, site_sets=federation_pb2.SiteSetsWanted(compact=True)))
        again = federation.status(federation_pb2.GetStatusRequest(
            round=1, site_sets=federation_pb2.SiteSetsWanted(compact=True,
                                                             roster_digest=first.roster.digest)))
        reply_bytes = {"status_reply_bytes": status.ByteSize(),  # the operator's: every site
                       "site_status_reply_bytes": again.ByteSize(),
                       "site_status_first_reply_bytes": first.ByteSize()}
        sampler.stop()
        peaks = {name: peak_rss_bytes(pid) for name, pid in pids.items()}
        # Of the resident memory at the end, how much is mapped files (not heap).
        files_mapped = {name: status_bytes(pid, "RssFile") for name, pid in pids.items()}
        counts = {name: state_counts(root / name) for name in central}
    finally:
        if sampler is not None and not sampler._stop.is_set():
            sampler.stop()
        federation.stop()
    return {**_summary(sites, arch, preset, status, marks, sampler, peaks, counts, idle,
                       files_mapped), **reply_bytes, "replicas": replicas}


def _summary(sites: int, arch: str, preset: str, status: Any, marks: dict[str, dict[str, float]],
             sampler: Sampler, peaks: dict[str, int], counts: dict[str, Any],
             idle: float, files_mapped: dict[str, int]) -> dict[str, Any]:
    summary = next(r for r in status.rounds if r.round == 1)
    opened, sealed = summary.opened_unix, summary.sealed_unix
    last_upload_start = max(m["encrypted"] for m in marks.values())
    last_download = max(m["decrypted"] for m in marks.values())
    first_start = min(m["start"] for m in marks.values())
    central = {name: {
        "cpu_s_round": sampler.cpu_between(name, opened, last_download),
        "cpu_s_total": sampler.cpu_between(name, idle, last_download),
        "peak_rss_mb": peaks[name] / 2**20,
        "peak_rss_round_mb": sampler.peak_rss(name, opened) / 2**20,
        "peak_rss_anon_round_mb": sampler.peak_rss(name, opened, anonymous=True) / 2**20,
        "idle_rss_mb": sampler.samples[0][1][name][1] / 2**20,
        "end_rss_file_mb": files_mapped[name] / 2**20,
        **counts[name]} for name in peaks}
    per_site = {phase: float(np.median([m[b] - m[a] for m in marks.values()]))
                for phase, a, b in (("encrypt", "opened_seen", "encrypted"),
                                    ("upload", "encrypted", "uploaded"),
                                    ("status", "seal_seen", "status"),
                                    ("download", "status", "downloaded"),
                                    ("decrypt", "downloaded", "decrypted"))}
    cpu_round = sum(c["cpu_s_round"] for c in central.values())
    return {
        "sites": sites, "model": f"{arch}/{preset}", "load_average": os.getloadavg(),
        "code": _code_version(),
        "open_to_seal_s": sealed - opened,
        "last_upload_start_to_seal_s": sealed - last_upload_start,
        "seal_to_last_download_s": last_download - sealed,
        "join_to_open_s": opened - first_start,
        "per_site_median_s": per_site,
        "central_cpu_s_per_site": cpu_round / sites,
        "central": central,
        "exact_fedavg_sites": len(marks),  # each raised unless it held the exact FedAvg
        # Resident memory (MB) over time (seconds from the round's open), one point a second.
        "rss_timeline": [[round(t - opened, 1), *(round(rss[n][1] / 2**20) for n in central)]
                         for t, rss in sampler.samples[::max(1, round(1 / SAMPLE_S))]],
    }


# Goals of issue 25, on the 2-core machine (docs/experiments/scale/README.md).


def run(quick: bool) -> list[str]:
    """`make bench` entry: 10, 100 and 1,000 sites with 0.73 M values (quick: 3 and 10 sites
    with the small model), each once; the goals' verdicts."""
    points = [(3, "small"), (10, "small")] if quick else [(10, "0.73M"), (100, "0.73M"),
                                                          (1000, "0.73M")]
    results = []
    for sites, values in points:
        results.append(run_point(sites, values))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "rss_timeline"}),
              flush=True)
    return verdicts(results)


def _code_version() -> str:
    """The commit measured ("-dirty" with uncommitted changes; "" outside a git checkout)."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--",
                                "services", "ucadi", "bench"], capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return commit + ("-dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run one point, print (and optionally write) the measurements."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, help="simulated sites (>= 2)")
    parser.add_argument("--values", default="0.73M",
                        help=f"update size: {', '.join(VALUE_SIZES)} or an exact value count")
    parser.add_argument("--processes", type=int, default=4, help="site processes")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="sites one process runs at a time")
    parser.add_argument("--replicas", type=int, default=1,
                        help="sum-service replicas, each summing a block range (default 1; "
                             "more: sites upload through the aggregator)")
    parser.add_argument("--json", type=Path, help="append the measurements to this JSON list")
    parser.add_argument("--report", type=Path, metavar="RESULTS.json",
                        help="no run: from a --json file write the plot (.png) and the table "
                             "with the goals' verdicts (.md) beside it")
    args = parser.parse_args(argv)
    if args.report:
        if not args.report.is_file():
            parser.error(f"--report {args.report}: no such results file (write one with "
                         "--json)")
        results = json.loads(args.report.read_text())
        plot(results, args.report.with_suffix(".png"))
        args.report.with_suffix(".md").write_text(report(results))
        print(report(results))
        return 0
    if args.sites is None:
        parser.error("--sites is required (unless --report)")
    result = run_point(args.sites, args.values, args.processes, args.concurrency,
                       replicas=args.replicas)
    print(json.dumps(result, indent=2))
    if args.json:
        previous = json.loads(args.json.read_text()) if args.json.exists() else []
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([*previous, result], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
