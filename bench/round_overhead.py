"""Round overhead without training: download, decrypt, encrypt, upload, sum, seal.

Three site processes drive real crypto and aggregator processes on loopback (mutual TLS, SQLite,
chunked streams). Each round, every site downloads and decrypts the current global model,
encrypts an update and sends it to the crypto service's sum service (recording it at the
aggregator), the aggregator seals the sum, and the sites fetch and decrypt the new version. A
round's overhead is the time from the first site seeing it open to the last site holding the
decrypted result, less a fixed pause that stands for local training (TRAINING_PAUSE_S, the same
in both modes). As the trainer does, a site makes its next encryption mask (a*s + e) and the
round sum's decryption product during that pause, so encrypting at upload time and decrypting
the sum are each one pass of additions. Where that prepared work takes longer than the pause (46
M values on 2 shared cores), the pause lasts until it is done, since real local training
outlasts it by far; its cost is printed beside the result so it is not hidden. The same run
measures the encryption-off mode (plaintext updates, in-process sum at the aggregator), the
relayed topology (every ciphertext passes through the aggregator: server.site_contributions
false), the single-node encrypted deployment (ciphertexts summed in-process at the aggregator:
the same topology as the plaintext mode, so that ratio is the cryptosystem's cost alone) and
Flower's FedAvg with three clients and the same number of parameters (bench.flower_baseline), so
the ratios compare like with like on this machine.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

SITES = ["main-campus", "optical-valley", "sino-french"]
# (label, architecture, preset): the papers' 3D-DenseNet and a 3D-ResNet50-sized model.
MODELS = [("0.73 M (densenet3d/paper)", "densenet3d", "paper"),
          ("46 M (resnet3d50/paper)", "resnet3d50", "paper")]
SITE_WEIGHT = 10
# The marks a site records each round; a phase is the time between a mark and the next.
PHASES = ["opened", "base", "trained", "encoded", "uploaded", "sealed", "downloaded", "held"]
# Stands for local training between adopting the base and encrypting the update: the same
# pause in both modes, subtracted from the round's span (it is training, not overhead).
TRAINING_PAUSE_S = 0.3
GOAL_ENCRYPTED_VS_PLAIN = 1.5
COMPACT = "encrypted, compact"
RELAYED = "encrypted, relayed"
SINGLE_NODE = "encrypted, single node"
# Topologies: sites exchange ciphertexts with the sum service directly (the deployed default);
# through the aggregator, which passes them on (server.site_contributions: false); or a single
# node, where the aggregator adds them itself (no sum service).
DIRECT, RELAY, SINGLE = "direct", "relay", "single"
# (label, LWE parameter set or None for plaintext, topology): the default set (up to 1,000
# sites; 6.5 bytes per value up, 5.5 down) in the deployed topology carries the goal. Shown
# beside it: the compact set (up to 64 sites; 5.5 up, 5 down), the relayed topology, and the
# single node, where the aggregator adds the ciphertexts in-process as the plaintext mode adds
# plaintexts, so the two differ only in the cryptosystem, not in the number of services.
MODES = [("encrypted", "rlwe-n4096-q56", DIRECT), (COMPACT, "rlwe-n4096-q48", DIRECT),
         (RELAYED, "rlwe-n4096-q56", RELAY), (SINGLE_NODE, "rlwe-n4096-q56", SINGLE),
         ("plaintext", None, DIRECT)]


def _site(site: str, pki: str, aggregator: str, crypto: str, work: str, encrypted: bool,
          rounds: int, results: Any, sites: list[str] = SITES, masked: bool = False) -> None:
    """One site's loop in its own process; puts its timings, or its error, on `results`."""
    try:
        results.put((site, _site_rounds(site, pki, aggregator, crypto, work, encrypted, rounds,
                                        sites, masked)))
    except Exception:  # the parent reports the child's failure instead of waiting forever
        results.put((site, traceback.format_exc()))


def _site_rounds(site: str, pki: str, aggregator: str, crypto: str, work: str, encrypted: bool,
                 rounds: int, sites: list[str] = SITES, masked: bool = False
                 ) -> list[tuple[int, dict[str, float]]]:
    """[(round, {phase: wall-clock time it ended})] for each round (PHASES, in order);
    `masked`: pairwise masks (issue 21): their key and share phases and the mask's expansion
    run during the stand-in for training (extending it if they take longer, as the prepared
    work does), their unmasking answer between "uploaded" and "sealed", the masks' removal
    between "downloaded" and "held"."""
    import torch

    from ucadi.ops.memory import tune_allocator

    tune_allocator()  # as `ucadi serve trainer` does for a site

    from services.trainer.cipher import AnnouncedSum, RoundContext, SiteCipher
    from services.trainer.client import FederationClient
    from services.trainer.keys import obtain_secret, site_identity
    from services.trainer.masking import SiteCredentials, SiteMasks
    from ucadi.learn.server_opt import announced_optimization
    from ucadi.lwe.custodian import read_custodian_public_key
    from ucadi.lwe.integrity import update_slot_count
    from ucadi.lwe.masking import unmasker
    from ucadi.ops.tls import TLSFiles
    from ucadi.v1 import federation_pb2
    from ucadi.wire.plain_update import plain_average, write_plain

    torch.set_num_threads(1)
    tls = TLSFiles.from_dir(Path(pki) / site)
    client = FederationClient(aggregator, tls, sum_target=crypto if encrypted else "")
    custodian = read_custodian_public_key(Path(pki).parent / "custodian")
    cipher = SiteCipher(obtain_secret(crypto, tls, Path(work), wait_s=300, custodian=custodian),
                        Path(work) / "lwe") if encrypted else None
    if masked:
        identity_keys, identity = site_identity(Path(work))
    joined = client.join(SITE_WEIGHT, "bench")
    layout = joined.model.layout_hash
    rng = np.random.default_rng(sites.index(site))
    vector = rng.normal(0, 0.05, joined.model.value_count)
    folder = Path(work) / "transfers"
    masks = SiteMasks(Path(work) / "masking", site, joined.federation_id,
                      bytes.fromhex(joined.encryption.key_id),
                      SiteCredentials(identity_keys.private_key, identity, custodian)
                      ) if masked else None

    def announced(version: int) -> AnnouncedSum:
        return AnnouncedSum(joined.federation_id, version, site, tuple(sites), (), len(sites))

    def decrypt(version: int, path: Path, checked: bool) -> np.ndarray:
        if cipher is None:
            return plain_average(path, checked)
        unmask = (unmasker(client.unmasking_terms(version), cipher.secret.params)
                  if masks is not None else None)
        return cipher.decrypt_average(path, layout, announced(version), checked, unmask)

    def adopt(version: int) -> np.ndarray:
        path, checked = client.download_global(version, folder / f"v{version}.bin", 1 << 40)
        average = decrypt(version, path, checked)
        path.unlink()
        return average

    timings = []
    held = 0  # like the trainer, a site adopts each global version once
    for round_number in range(1, rounds + 1):
        info = client.get_round()
        while not (info.round == round_number and info.awaiting_caller):
            info = client.get_round(info.round, info.state, wait_s=5.0)
        marks = {"opened": time.time()}
        if info.base_version > held:
            vector = adopt(info.base_version)
            held = info.base_version
        marks["base"] = time.time()
        # Training stands here in a real round; the trainer makes the encryption mask and the
        # decryption product during it (SiteCipher.prepare), as this pause does. Its length is
        # not round overhead.
        if cipher:
            cipher.prepare(vector.size, RoundContext(joined.federation_id, round_number, site,
                                                     tuple(info.expected_sites)))
        # Pairwise masks: keys, shares and the whole mask while the site "trains", on their
        # own thread as the trainer does; a site waits for them (the slowest site's keys and
        # shares) before it encrypts, inside the stand-in for training.
        masking = None
        if cipher and masks is not None:
            masking = cipher.in_background(masks.prepare, client, round_number, lambda: True,
                                           update_slot_count(vector.size),
                                           cipher.secret.params)
        vector = vector.copy()  # "training" moves a sparse set of values: cheap at 46 M too
        vector[rng.integers(0, vector.size, 1000)] += rng.normal(0, 1e-3, 1000)
        time.sleep(max(0.0, marks["base"] + TRAINING_PAUSE_S - time.time()))
        if cipher:
            cipher.wait_prepared()  # real training outlasts it (minutes per epoch at 46 M)
        prepared = masking.result() if masking is not None else None
        marks["trained"] = time.time()
        path = folder / f"update-{round_number}.bin"
        if cipher:
            cipher.encrypt_to_file(vector, weight=SITE_WEIGHT, round_number=round_number,
                                   layout_hash=layout, path=path, site=site,
                                   pairwise=prepared[0].masker(cipher.secret.params,
                                                               prepared[1])
                                   if prepared is not None else None)
        else:
            write_plain(path, vector * SITE_WEIGHT, SITE_WEIGHT, round_number,
                        bytes.fromhex(layout), durable=False)
        marks["encoded"] = time.time()
        client.upload_update(federation_pb2.UpdateHeader(
            round=round_number, base_version=info.base_version,
            parameter_set=joined.encryption.parameter_set, key_id=joined.encryption.key_id,
            layout_hash=layout, num_samples=SITE_WEIGHT, local_epochs=1,
            optimizer_digest=announced_optimization(
                joined.model.optimizer_json).digest), path)
        path.unlink()
        marks["uploaded"] = time.time()
        answered = masks is None
        while info.latest_version < round_number:
            if not answered and info.round == round_number and \
                    info.state == federation_pb2.ROUND_STATE_UNMASKING:
                answered = masks.answer(client, round_number, list(info.unmasking_survivors),
                                        list(info.unmasking_dropped))
            info = client.get_round(info.round, info.state, wait_s=5.0)
        marks["sealed"] = time.time()
        path, checked = client.download_global(round_number, folder / f"v{round_number}.bin",
                                               1 << 40)
        marks["downloaded"] = time.time()
        vector = decrypt(round_number, path, checked)
        marks["held"] = time.time()
        _check_all_summed(path, encrypted, round_number, len(sites))
        path.unlink()
        held = round_number
        timings.append((round_number, marks))
    client.close()
    return timings


def _check_all_summed(path: Path, encrypted: bool, round_number: int,
                      site_count: int = len(SITES)) -> None:
    """A global version must hold every site's update: a faster round that dropped one would
    measure nothing (checked after the round's timing marks)."""
    from ucadi.lwe.stream import open_verified
    from ucadi.wire.plain_update import read_plain

    summed = (open_verified(path).header.contributors if encrypted
              else read_plain(path)[0].weight // SITE_WEIGHT)
    if summed != site_count:
        raise RuntimeError(f"global version {round_number} sums {summed} of {site_count} "
                           "site updates")


def measure_round_seconds(arch: str, preset: str, parameter_set: str | None, rounds: int,
                          topology: str = DIRECT, sites: list[str] = SITES,
                          masked: bool = False) -> tuple[list[float], dict[str, float]]:
    """Per-round overhead (seconds) of our federation for one model size, encrypted under
    `parameter_set` (None: plaintext), and the median seconds a site spends in each phase;
    `topology`: DIRECT, RELAY or SINGLE (see MODES); `masked`: pairwise masks (issue 21; else
    the shared-key mode)."""
    encrypted = parameter_set is not None
    from ucadi.demo.federation import FederationPlan, LocalFederation

    with tempfile.TemporaryDirectory(prefix="ucadi-bench-") as tmp:
        plan = FederationPlan(root=Path(tmp), manifest=Path(tmp) / "unused.csv", sites=sites,
                              rounds=rounds, min_sites=len(sites), arch=arch,
                              model_preset=preset, encryption=encrypted,
                              parameter_set=parameter_set or "",
                              federation_id="bench", sum_in_aggregator=topology == SINGLE,
                              site_contributions=topology == DIRECT,
                              recipe={"total_epochs": rounds, "warmup_epochs": 0},
                              pairwise_masks=masked and encrypted)
        federation = LocalFederation(plan)
        federation.provision()
        federation.create_key()
        context = mp.get_context("spawn")
        results = context.Queue()
        try:
            federation.start_crypto()
            federation.start_aggregator()
            workers = [context.Process(target=_site, args=(
                site, str(federation.pki), federation.processes["aggregator"].target,
                # The custodian pins each site's key from <root>/sites/<site>/work/keys, as
                # LocalFederation lays a site out (issue 19's pins).
                federation.processes["crypto"].target, str(Path(tmp) / "sites" / site / "work"),
                encrypted,
                rounds, results, sites, masked)) for site in sites]
            for worker in workers:
                worker.start()
            if encrypted:
                federation.approve_sites(sites)
            timings = {}
            for _ in sites:
                site, outcome = results.get(timeout=3600)
                if isinstance(outcome, str):  # a site's traceback: stop at once
                    raise RuntimeError(f"site {site} failed:\n{outcome}")
                timings[site] = outcome
            for worker in workers:
                worker.join(60)
        finally:
            federation.stop()
    # The stand-in for training (the pause, or the prepared work where that takes longer) is
    # not overhead: the span less the longest site's.
    overheads = [max(t[r][1]["held"] for t in timings.values())
                 - min(t[r][1]["opened"] for t in timings.values())
                 - max(t[r][1]["trained"] - t[r][1]["base"] for t in timings.values())
                 for r in range(rounds)]
    phases = {f"{a}->{b}": statistics.median(t[r][1][b] - t[r][1][a] for t in timings.values()
                                             for r in range(rounds))
              for a, b in zip(PHASES, PHASES[1:], strict=False)}
    return overheads, phases


def run(quick: bool) -> list[str]:
    """Both model sizes (quick: 0.73 M only), encryption on and off, and Flower."""
    summary = []
    for label, arch, preset in MODELS[:1] if quick else MODELS:
        # The small model runs each mode in four interleaved blocks, so a change in the
        # shared machine's load during the run falls on every mode alike; the ratio of each
        # block is printed too, since blocks differ by more than rounds within one do.
        blocks, rounds = (4, 8) if "0.73" in label else (1, 2)
        seconds: dict[str, list[float]] = {mode: [] for mode, _, _ in MODES}
        phases: dict[str, list[dict[str, float]]] = {mode: [] for mode, _, _ in MODES}
        block_ratios = []
        for _ in range(blocks):
            block_medians = {}
            for mode, parameter_set, topology in MODES:
                block_seconds, block_phases = measure_round_seconds(arch, preset, parameter_set,
                                                                    rounds, topology)
                seconds[mode] += block_seconds
                phases[mode].append(block_phases)
                block_medians[mode] = statistics.median(block_seconds)
            block_ratios.append(block_medians["encrypted"] / block_medians["plaintext"])
        medians = {}
        for mode, _, _ in MODES:
            medians[mode] = statistics.median(seconds[mode])
            phase = {k: statistics.median(p[k] for p in phases[mode]) for k in phases[mode][0]}
            print(f"{label}, {mode}: " + ", ".join(f"{s:.2f}" for s in seconds[mode])
                  + f" s/round (median {medians[mode]:.2f}); per site: "
                  + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in phase.items()), flush=True)
        plain = medians["plaintext"]
        ratio = medians["encrypted"] / plain
        verdict = "met" if ratio <= GOAL_ENCRYPTED_VS_PLAIN else "NOT met"
        line = (f"round overhead {label}: encrypted {medians['encrypted']:.2f} s, plaintext "
                f"{plain:.2f} s, ratio {ratio:.2f}x (goal <= {GOAL_ENCRYPTED_VS_PLAIN}x: "
                f"{verdict}); compact parameter set (<= 64 sites) "
                f"{medians[COMPACT] / plain:.2f}x; relayed through the aggregator "
                f"{medians[RELAYED]:.2f} s, {medians[RELAYED] / plain:.2f}x; single node (sum "
                f"in the aggregator, like the plaintext mode) {medians[SINGLE_NODE]:.2f} s, "
                f"{medians[SINGLE_NODE] / plain:.2f}x; encrypted/plaintext per block "
                f"{', '.join(f'{r:.2f}' for r in block_ratios)}; made during training, per "
                f"site on one thread: encryption mask + decryption product "
                f"{_prepared_seconds(arch, preset):.2f} s")
        line += _flower_comparison(plain, _value_count(arch, preset), blocks * rounds)
        print(line, flush=True)
        summary.append(line)
    return summary


def _flower_comparison(plain: float, value_count: int, rounds: int) -> str:
    """Our plaintext round against Flower's FedAvg, both ways Flower runs: its deprecated
    gRPC start_server/start_client API (no polling: a lower bound on Flower's cost), plain and
    over TLS (ours is always mutual TLS), and its current deployment path, SuperLink +
    SuperNodes + `flwr run` (HTTP in Flower 1.41)."""
    from bench.flower_baseline import measure_flower_round_seconds
    from bench.flower_deployment import measure_flower_deployment_round_seconds

    def legacy_tls(values: int, rounds: int) -> float:
        return measure_flower_round_seconds(values, rounds=rounds, tls=True)

    text = ""
    for label, measure, repeats in (
            ("Flower FedAvg, legacy gRPC API", measure_flower_round_seconds, rounds),
            ("the same over TLS", legacy_tls, rounds),
            ("Flower FedAvg, deployment path", measure_flower_deployment_round_seconds, 3)):
        try:
            flower = measure(value_count, rounds=repeats)
        except (ImportError, RuntimeError) as exc:
            text += f"; {label}: unavailable ({str(exc).splitlines()[0]})"
            continue
        text += (f"; {label} {flower:.2f} s, plaintext/Flower {plain / flower:.2f}x "
                 f"(goal <= 1: {'met' if plain <= flower else 'NOT met'})")
    return text


def _prepared_seconds(arch: str, preset: str) -> float:
    """Seconds one site spends on its prepared work for this model: the encryption mask and
    the decryption product of a three-site sum (one thread)."""
    import torch

    from ucadi.lwe.keys import generate_secret_key
    from ucadi.lwe.prepared import prepare_mask, prepare_product, round_seed

    torch.set_num_threads(1)
    secret, slots = generate_secret_key(), _value_count(arch, preset) + 1
    started = time.perf_counter()
    prepare_mask(secret, slots)
    prepare_product(secret, slots, 1, [round_seed(secret.key_id, "bench", 1, site)
                                       for site in SITES])
    return time.perf_counter() - started


def _value_count(arch: str, preset: str) -> int:
    from ucadi.model.layout import ParameterLayout, initial_model

    model = initial_model(arch, preset, 2, 0)
    return ParameterLayout.of(model.state_dict()).value_count
