"""An experiment's results over seeds: markdown table, PNG and JSON.

Per arm and metric: mean, standard deviation and a 95 % t-interval of the mean over seeds
(seeds differ in cohort, initial weights and the sites' randomness, so the interval covers
all three), plus every seed's own value, so nothing is averaged out of sight.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ucadi.experiments.arms import CENTRALISED, GOAL_FEDERATED, LOCAL_ONLY, ArmResult

# Two-sided 95 % Student t quantiles by degrees of freedom (1..10); normal beyond.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
COLUMNS = (("pooled_auc", "pooled-test AUC"), ("pooled_sensitivity", "sensitivity"),
           ("pooled_specificity", "specificity"),
           ("holdout_sensitivity", "hold-out sensitivity"), ("bytes_total", "MB moved"),
           ("seconds", "wall time (s)"))


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, standard deviation, half-width of the 95 % t-interval of the mean)."""
    array = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if array.size == 0:
        return math.nan, math.nan, math.nan
    if array.size == 1:
        return float(array[0]), math.nan, math.nan
    sd = float(array.std(ddof=1))
    t = _T95[array.size - 2] if array.size - 1 <= len(_T95) else 1.96
    return float(array.mean()), sd, t * sd / math.sqrt(array.size)


def summary_rows(results: Sequence[ArmResult]) -> list[dict[str, Any]]:
    """One row per arm: its description, budget and each column's statistics over seeds."""
    rows = []
    for arm in dict.fromkeys(r.arm for r in results):
        mine = [r for r in results if r.arm == arm]
        row: dict[str, Any] = {"arm": arm, "describe": mine[0].extra.get("describe", arm),
                               "epochs": mine[0].extra.get("epochs"),
                               "seeds": [r.seed for r in mine]}
        for key in [k for k, _ in COLUMNS] + ["site_model_own_test_auc",
                                               "best_local_pooled_auc", "threshold"]:
            values = [_value(r, key) for r in mine]
            row[key] = {"values": values, **dict(zip(("mean", "sd", "ci95"),
                                                     mean_interval(values), strict=True))}
        rows.append(row)
    return rows


def _value(result: ArmResult, key: str) -> float:
    if key == "bytes_total":
        total = result.metrics.get("bytes_up", math.nan) + result.metrics.get("bytes_down",
                                                                              math.nan)
        return total / 1e6
    return float(result.metrics.get(key, math.nan))


def _cell(stat: dict[str, Any], digits: int) -> str:
    if math.isnan(stat["mean"]):
        return "–"
    text = f"{stat['mean']:.{digits}f}"
    if not math.isnan(stat["sd"]):
        text += f" ± {stat['sd']:.{digits}f} (CI ± {stat['ci95']:.{digits}f})"
    return text


def markdown(name: str, rows: Sequence[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The report's markdown."""
    path = ("in the plaintext simulation" if settings["plaintext_simulation"]
            else "encrypted through the real services")
    lines = [f"# `ucadi experiment {name}`", "",
             f"Cohort `{settings['cohort']}`, model `densenet3d/{settings['preset']}`, seeds "
             f"{settings['seeds']}, lr {settings['lr']}, batch {settings['batch_size']}; "
             f"federated arms {path}. "
             "Each cell: mean ± standard deviation over seeds (CI ±: half-width of the 95 % "
             "t-interval of the mean). Budget: local epochs each site (federated, local-only) "
             "or the pooled model trains in all." + _operating_point_note(settings), "",
             "| arm | configuration | budget (epochs) | "
             + " | ".join(title for _, title in COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [_cell(row[key], 0 if key in ("seconds",) else 1 if key == "bytes_total"
                       else 3) for key, _ in COLUMNS]
        lines.append(f"| {row['arm']} | {row['describe']} | {row['epochs']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Per seed (pooled-test AUC / hold-out sensitivity):", "",
              "| arm | " + " | ".join(f"seed {s}" for s in settings["seeds"]) + " |",
              "|---|" + "---|" * len(settings["seeds"])]
    for row in rows:
        pairs = [f"{a:.3f} / {h:.3f}" for a, h in zip(row["pooled_auc"]["values"],
                                                      row["holdout_sensitivity"]["values"],
                                                      strict=True)]
        lines.append(f"| {row['arm']} | " + " | ".join(pairs) + " |")
    fedbn = [row for row in rows if not math.isnan(row["site_model_own_test_auc"]["mean"])]
    if fedbn:
        lines += ["", "FedBN: each site's own model (the global weights with its own BatchNorm, "
                  "what its inference service serves) on its own test set; the table above "
                  "measures the global model with averaged BatchNorm, what a hospital that did "
                  "not train gets.", "", "| arm | own-site test AUC, mean over sites |",
                  "|---|---|"]
        lines += [f"| {row['arm']} | {_cell(row['site_model_own_test_auc'], 3)} |"
                  for row in fedbn]
    lines += goal_lines(rows, settings["seeds"])
    return "\n".join(lines) + f"\n\n![{name}]({name}.png)\n"


def _operating_point_note(settings: dict[str, Any]) -> str:
    """The header's sentence on how thresholds were chosen (only when the run says)."""
    if "operating_point" not in settings:
        return ""
    from ucadi.learn.evaluate import OperatingPoint

    point = OperatingPoint.parse(settings["operating_point"])
    note = (f" Thresholds (sensitivity, specificity, hold-out sensitivity): {point.describe()},"
            " chosen for each model on validation CTs (the pooled validation split for the "
            "federated and pooled models, a hospital's own for its local-only model).")
    if settings.get("rescored_from"):
        note += (" Re-scored from the saved per-CT scores of "
                 + ", ".join(f"`{p}`" for p in settings["rescored_from"]) + ".")
    return note


# Issue 17's goal: federated pooled-test AUC >= pooled model's - 0.02 and > every local-only
# model's; federated hold-out sensitivity >= pooled model's - 0.05.
AUC_MARGIN, HOLDOUT_MARGIN = 0.02, 0.05


def goal_lines(rows: Sequence[dict[str, Any]], seeds: Sequence[int]) -> list[str]:
    """The goal checked seed by seed, and the paired differences over seeds (empty unless the
    federated (demo), local-only and centralised arms all ran)."""
    by_arm = {row["arm"]: row for row in rows}
    if not {GOAL_FEDERATED, LOCAL_ONLY, CENTRALISED} <= set(by_arm):
        return []
    fed, local, central = by_arm[GOAL_FEDERATED], by_arm[LOCAL_ONLY], by_arm[CENTRALISED]

    def values(row: dict[str, Any], key: str) -> list[float]:
        return row[key]["values"]

    def met(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines = ["", f"Goal per seed (federated AUC >= centralised - {AUC_MARGIN} and > the best "
             f"local-only model; hold-out sensitivity >= centralised - {HOLDOUT_MARGIN}):", "",
             "| seed | federated vs centralised AUC | federated vs best local-only AUC | "
             "hold-out sensitivity federated vs centralised |", "|---|---|---|---|"]
    for i, seed in enumerate(seeds):
        f_auc, c_auc = values(fed, "pooled_auc")[i], values(central, "pooled_auc")[i]
        best_local = values(local, "best_local_pooled_auc")[i]
        f_hold, c_hold = (values(fed, "holdout_sensitivity")[i],
                          values(central, "holdout_sensitivity")[i])
        lines.append(f"| {seed} | {f_auc:.3f} vs {c_auc:.3f}: {met(f_auc >= c_auc - AUC_MARGIN)}"
                     f" | {f_auc:.3f} vs {best_local:.3f}: {met(f_auc > best_local)} | "
                     f"{f_hold:.3f} vs {c_hold:.3f}: {met(f_hold >= c_hold - HOLDOUT_MARGIN)} |")
    if not all(math.isnan(t) for t in values(fed, "threshold") + values(central, "threshold")):
        lines += ["", "Thresholds and pooled-test sensitivity / specificity at them:", "",
                  "| seed | federated threshold | federated sens / spec | centralised threshold"
                  " | centralised sens / spec |", "|---|---|---|---|---|"]
        for i, seed in enumerate(seeds):
            cells = [f"{values(row, 'threshold')[i]:.3f} | "
                     f"{values(row, 'pooled_sensitivity')[i]:.3f} / "
                     f"{values(row, 'pooled_specificity')[i]:.3f}" for row in (fed, central)]
            lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences over seeds (federated minus centralised; mean, 95 % "
              "t-interval of the mean):", ""]
    for key, title in (("pooled_auc", "pooled-test AUC"),
                       ("holdout_sensitivity", "hold-out sensitivity")):
        diffs = [f - c for f, c in zip(values(fed, key), values(central, key), strict=True)]
        mean, _, ci = mean_interval(diffs)
        spread = "" if math.isnan(ci) else f" ({mean - ci:+.3f} to {mean + ci:+.3f})"
        lines.append(f"- {title}: {mean:+.3f}{spread}")
    return lines


def plot(path: Path, rows: Sequence[dict[str, Any]], results: Sequence[ArmResult]) -> None:
    """Pooled AUC and hold-out sensitivity per arm (mean, CI, each seed), and AUC curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [r for r in results if r.curve]
    figure, axes = plt.subplots(1, 3 if curves else 2, figsize=(16 if curves else 11, 4.8))
    for axis, key, title in ((axes[0], "pooled_auc", "pooled-test AUC"),
                             (axes[1], "holdout_sensitivity", "hold-out sensitivity")):
        for i, row in enumerate(rows):
            stat = row[key]
            axis.errorbar([i], [stat["mean"]], yerr=[0 if math.isnan(stat["ci95"])
                                                      else stat["ci95"]], fmt="o", capsize=4)
            axis.scatter([i] * len(stat["values"]), stat["values"], s=10, color="grey")
        axis.set_xticks(range(len(rows)))
        axis.set_xticklabels([r["arm"] for r in rows], rotation=30, ha="right", fontsize=8)
        axis.set(title=f"{title} (mean, 95 % CI, seeds)", ylim=(0, 1.02))
    if curves:
        for result in curves:
            xs = [p["round"] * result.extra.get("epochs", 1) / max(len(result.curve), 1)
                  for p in result.curve]
            axes[2].plot(xs, [p["pooled_auc_1_sampling"] for p in result.curve],
                         label=f"{result.arm} s{result.seed}", linewidth=1)
        axes[2].set(title="pooled-test AUC over local epochs (1 sampling)",
                    xlabel="local epochs", ylim=(0.3, 1.0))
        axes[2].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(out: Path, name: str, results: Sequence[ArmResult],
                 settings: dict[str, Any]) -> list[Path]:
    """`name`.md, `name`.png and `name`.json under `out`."""
    rows = summary_rows(results)
    settings = {k: v for k, v in settings.items() if k != "func"}
    files = [out / f"{name}.md", out / f"{name}.png", out / f"{name}.json"]
    files[0].write_text(markdown(name, rows, settings))
    plot(files[1], rows, results)
    files[2].write_text(json.dumps({"settings": settings, "summary": rows, "runs": [
        {"arm": r.arm, "seed": r.seed, "metrics": r.metrics, "curve": r.curve,
         "extra": r.extra} for r in results]}, indent=2, default=float))
    return files
