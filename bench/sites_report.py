"""What `python -m bench.sites` reports from its results: the issue's goals read against them,
the plot of time and memory against the number of sites, and the markdown tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

GOAL_SEAL_S = 60.0  # last upload's start -> seal, at 1,000 sites
GOAL_MEMORY_RATIO = 2.0  # central peak memory, 1,000 sites / 10 sites
GOAL_PER_SITE_RATIO = 1.5  # central CPU per site, 1,000 sites / 10 sites



def central_peak_mb(result: dict[str, Any]) -> float:
    """Peak resident memory of the central processes together (MB)."""
    return sum(c["peak_rss_mb"] for c in result["central"].values())


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    """The goals checked on the smallest and largest runs (medians where run twice)."""
    def median_of(sites: int, measure: Any) -> float:
        return float(np.median([measure(r) for r in results if r["sites"] == sites]))

    small, large = min(r["sites"] for r in results), max(r["sites"] for r in results)
    seal = median_of(large, lambda r: r["last_upload_start_to_seal_s"])
    memory = median_of(large, central_peak_mb) / median_of(small, central_peak_mb)
    per_site = (median_of(large, lambda r: r["central_cpu_s_per_site"])
                / median_of(small, lambda r: r["central_cpu_s_per_site"]))
    exact = all(r.get("exact_fedavg_sites") == r["sites"] for r in results)

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"
    return [f"{large} sites: last upload start -> seal {seal:.1f} s (goal <= {GOAL_SEAL_S:.0f} "
            f"s: {met(seal <= GOAL_SEAL_S)})",
            f"central peak memory {large} / {small} sites {memory:.2f}x (goal <= "
            f"{GOAL_MEMORY_RATIO}x: {met(memory <= GOAL_MEMORY_RATIO)})",
            f"central CPU per site {large} / {small} sites {per_site:.2f}x (goal <= "
            f"{GOAL_PER_SITE_RATIO}x: {met(per_site <= GOAL_PER_SITE_RATIO)})",
            f"every site decrypted the exact FedAvg in every run: {met(exact)}"]


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Round times and central memory and CPU per site against the number of sites (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = single_sum_service(results)
    counts = sorted({r["sites"] for r in results})
    figure, (times, memory, cpu) = plt.subplots(1, 3, figsize=(15, 4.2))
    for key, label in (("open_to_seal_s", "round open -> seal"),
                       ("last_upload_start_to_seal_s", "last upload start -> seal"),
                       ("seal_to_last_download_s", "seal -> last site decrypted")):
        times.plot([r["sites"] for r in results], [r[key] for r in results], "o", alpha=0.5)
        times.plot(counts, [np.median([r[key] for r in results if r["sites"] == n])
                            for n in counts], "-", label=label, color=times.lines[-1].get_color())
    times.axhline(GOAL_SEAL_S, ls=":", color="grey", label="goal (last upload -> seal)")
    for name in ("aggregator", "crypto"):
        memory.plot(counts, [np.median([r["central"][name]["peak_rss_mb"] for r in results
                                        if r["sites"] == n]) for n in counts], "o-",
                    label=f"{name} peak RSS")
    cpu.plot(counts, [np.median([r["central_cpu_s_per_site"] for r in results
                                 if r["sites"] == n]) * 1000 for n in counts], "o-",
             label="aggregator + crypto")
    for axis, ylabel in ((times, "seconds"), (memory, "MB"), (cpu, "central CPU ms per site")):
        axis.set_xscale("log")
        axis.set_xlabel("sites")
        axis.set_ylabel(ylabel)
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    memory.set_ylim(bottom=0)
    cpu.set_ylim(bottom=0)
    times.set_title(f"round times ({results[0]['model']})")
    memory.set_title("central memory")
    cpu.set_title("central CPU per site")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def single_sum_service(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs with one sum service (the goals' runs; runs with replicas are compared apart)."""
    return [r for r in results if r.get("replicas", 1) == 1]


def replicas_report(results: list[dict[str, Any]]) -> list[str]:
    """Markdown: runs with sharded sum replicas beside the single-service runs of the same size,
    each central process's CPU in the round and peak memory."""
    sizes = sorted({r["sites"] for r in results if r.get("replicas", 1) > 1})
    if not sizes:
        return []
    lines = ["", "Sharded sum replicas (sites upload through the aggregator, which cuts each "
             "ciphertext into the replicas' block ranges) beside one sum service (sites "
             "exchange ciphertexts with it directly):", "",
             "| sites | sum services | open -> seal (s) | last upload start -> seal (s) | "
             "central CPU per site (ms) | CPU in the round (s), each process | peak RSS (MB), "
             "each process | load average (1 min) |", "|" + "---|" * 8]
    for r in sorted((r for r in results if r["sites"] in sizes),
                    key=lambda r: (r["sites"], r.get("replicas", 1))):
        processes = r["central"]
        lines.append(
            f"| {r['sites']} | {r.get('replicas', 1)} | {r['open_to_seal_s']:.1f} | "
            f"{r['last_upload_start_to_seal_s']:.1f} | "
            f"{r['central_cpu_s_per_site'] * 1000:.0f} | "
            + ", ".join(f"{n} {c['cpu_s_round']:.1f}" for n, c in processes.items()) + " | "
            + ", ".join(f"{n} {c['peak_rss_mb']:.0f}" for n, c in processes.items())
            + f" | {r['load_average'][0]:.1f} |")
    return lines


def report(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per run, then the goals' verdicts (runs with one sum service), then
    the runs with sharded sum replicas."""
    replicated = replicas_report(results)
    results = single_sum_service(results)
    lines = ["| sites | values | open -> seal (s) | last upload start -> seal (s) | seal -> "
             "last decrypted (s) | central CPU per site (ms) | aggregator CPU (s) | crypto "
             "CPU (s) | aggregator peak RSS (MB) | crypto peak RSS (MB) | crypto peak heap "
             "in round (MB) | state files (agg / crypto) | SQLite rows (agg / crypto) | "
             "status reply to a site (B) | load average (1 min) |", "|" + "---|" * 15]
    for r in sorted(results, key=lambda r: r["sites"]):
        agg, crypto = r["central"]["aggregator"], r["central"]["crypto"]
        heap = crypto.get("peak_rss_anon_round_mb")
        lines.append(
            f"| {r['sites']} | {r['model']} | {r['open_to_seal_s']:.1f} | "
            f"{r['last_upload_start_to_seal_s']:.1f} | {r['seal_to_last_download_s']:.1f} | "
            f"{r['central_cpu_s_per_site'] * 1000:.0f} | {agg['cpu_s_round']:.1f} | "
            f"{crypto['cpu_s_round']:.1f} | {agg['peak_rss_mb']:.0f} | "
            f"{crypto['peak_rss_mb']:.0f} | {'-' if heap is None else f'{heap:.0f}'} | "
            f"{agg['files']} / {crypto['files']} | {agg['sqlite_rows']} / "
            f"{crypto['sqlite_rows']} | {_site_status_bytes(r)} | "
            f"{r['load_average'][0]:.1f} |")
    phases = ["encrypt", "upload", "status", "download", "decrypt"]
    lines += ["", "Per site, median seconds of each step (the site's own view, queueing included):",
              "", "| sites | code | " + " | ".join(phases) + " |", "|" + "---|" * (len(phases) + 2)]
    for r in sorted(results, key=lambda r: r["sites"]):
        lines.append(f"| {r['sites']} | {r.get('code', '')} | " + " | ".join(
            f"{r['per_site_median_s'][phase]:.2f}" for phase in phases) + " |")
    return "\n".join([*lines, "", *(f"- {line}" for line in verdicts(results)), *replicated,
                      ""])


def _site_status_bytes(result: dict) -> str:
    """The status reply a site gets per global version: compact site sets with the roster
    known (the first reply, carrying the roster, in brackets); runs before the compact sets
    measured the operator's whole reply, which was then also the site's."""
    if "site_status_reply_bytes" not in result:
        return str(result["status_reply_bytes"])
    return f"{result['site_status_reply_bytes']} ({result['site_status_first_reply_bytes']})"
