"""`ucadi experiment goal-evidence`: what every finished goal run says about issue 17's goal.

The goal is checked seed by seed: on each of 3 seeds the federated model's pooled-test AUC must
be >= the pooled model's - 0.02 and above every hospital's own model, and its hold-out
sensitivity >= the pooled model's - 0.05. Single goal runs answer "met or not" for one seed;
this report answers the questions behind them, from the goal runs' JSONs (no training):

- how often each part holds per seed (with a Clopper-Pearson interval), and so how likely a
  check on 3 seeds nobody chose is to pass; seeds are summarised together only when they share
  the cohort and both budgets (the federation's and the pooled model's epochs);
- how the federated minus pooled AUC difference spreads over seeds, and how much of that
  spread the test set's size explains: where both models' per-CT scores were saved, the paired
  DeLong variance of the difference is the test set's share, the rest is training (cohort,
  initial weights, sampling);
- under a normal model of the difference, the chance that part 1 holds on a seed now, and with
  an unlimited test set (only the training spread left): what a larger test set can and cannot
  reach;
- the federation's curves over rounds, seed by seed, against the pooled and best local
  models, and any runs beyond the goal's budget (`--beyond`, e.g. a federation given 4x the
  pooled model's epochs), on the same seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import beta, norm

from ucadi.errors import UcadiError
from ucadi.experiments.arms import CENTRALISED, FEDERATED, GOAL_FEDERATED, LOCAL_ONLY
from ucadi.experiments.report import AUC_MARGIN, HOLDOUT_MARGIN, mean_interval
from ucadi.experiments.rescore import read_experiment
from ucadi.learn.stats import delong

POOLED_SET = "pooled test"
PARTS = ("AUC >= pooled - 0.02", "AUC > every local model", "hold-out >= pooled - 0.05")
# A check on 3 seeds passes with probability p^3 when each seed passes with probability p.
CHECK_SEEDS = 3
# Fewer seeds with saved scores than this make the test / training split of the spread rough.
ROUGH_BELOW = 3


class EvidenceError(UcadiError):
    """Goal runs that cannot be summarised (not goal runs, mixed rules, repeated seeds)."""


@dataclass
class SeedGoal:
    """One seed's goal run: the three models' figures, the parts met and the federation's
    curve over rounds."""

    cohort: str
    seed: int
    fed_auc: float
    central_auc: float
    best_local_auc: float
    fed_holdout: float
    central_holdout: float
    fed_epochs: int
    central_epochs: int
    curve: list[tuple[float, float]] = field(default_factory=list)
    paired_se: float = math.nan  # DeLong SE of fed - central AUC on the pooled test set
    source: str = ""

    @property
    def budgets(self) -> tuple[str, int, int]:
        """The cohort and both budgets: seeds are summarised together only when these agree."""
        return self.cohort, self.fed_epochs, self.central_epochs

    @property
    def difference(self) -> float:
        """Federated minus pooled model's pooled-test AUC."""
        return self.fed_auc - self.central_auc

    @property
    def parts(self) -> tuple[bool, bool, bool]:
        """The goal's three parts on this seed."""
        return (self.fed_auc >= self.central_auc - AUC_MARGIN,
                self.fed_auc > self.best_local_auc,
                self.fed_holdout >= self.central_holdout - HOLDOUT_MARGIN)


@dataclass
class BeyondRun:
    """A federated or pooled run outside the goal's budgets, on a seed of the goal runs."""

    cohort: str
    seed: int
    arm: str
    kind: str
    epochs: int
    auc: float
    holdout: float
    curve: list[tuple[float, float]] = field(default_factory=list)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for k successes in n trials."""
    alpha = 1 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def paired_se(fed_scores: dict[str, Any], central_scores: dict[str, Any]) -> float:
    """DeLong standard error of the two models' AUC difference on the same pooled-test CTs."""
    fed, central = fed_scores["sets"][POOLED_SET], central_scores["sets"][POOLED_SET]
    if fed["case_ids"] != central["case_ids"]:
        raise EvidenceError("the federated and pooled models were scored on different "
                            "pooled-test CTs")
    result = delong(np.stack([fed["covid"], central["covid"]]), np.asarray(fed["labels"]))
    c = result.covariance
    return float(math.sqrt(max(c[0, 0] + c[1, 1] - 2 * c[0, 1], 0.0)))


def _curve(run: dict[str, Any]) -> list[tuple[float, float]]:
    """(local epochs, pooled-test AUC with one sampling) after every round."""
    points = run.get("curve") or []
    epochs = run.get("extra", {}).get("epochs", len(points))
    return [(p["round"] * epochs / len(points), p["pooled_auc_1_sampling"]) for p in points]


def load_goals(paths: Sequence[Path]) -> list[SeedGoal]:
    """Every seed of the goal runs in `paths` (one goal.json may hold several seeds). All must
    choose thresholds by one rule, and no (cohort, seed) may appear twice."""
    goals: list[SeedGoal] = []
    rules: dict[str, str] = {}
    for path in paths:
        data = read_experiment(path, EvidenceError)
        settings = data["settings"]
        if settings.get("study") != "goal":
            raise EvidenceError(f"{path} is a '{settings.get('study')}' experiment, not a goal "
                                "run (`ucadi experiment goal`)")
        rule = str(settings.get("operating_point", "youden"))
        rules.setdefault(rule, str(path))
        if len(rules) > 1:
            raise EvidenceError(f"{path} chose thresholds by {rule!r}, {rules[next(iter(rules))]}"
                                f" by {next(iter(rules))!r}: summarise runs of one rule (re-score"
                                " with `ucadi experiment goal --rescore` first)")
        cohort = settings.get("cohort", "small")
        by_seed: dict[int, dict[str, dict[str, Any]]] = {}
        for run in data["runs"]:
            by_seed.setdefault(run["seed"], {})[run["arm"]] = run
        for seed, arms in by_seed.items():
            missing = {GOAL_FEDERATED, LOCAL_ONLY, CENTRALISED} - set(arms)
            if missing:
                raise EvidenceError(f"{path}: seed {seed} lacks the arms {sorted(missing)}")
            if any((g.cohort, g.seed) == (cohort, seed) for g in goals):
                raise EvidenceError(f"{path}: cohort '{cohort}' seed {seed} appears in more "
                                    "than one goal run")
            fed, local, central = arms[GOAL_FEDERATED], arms[LOCAL_ONLY], arms[CENTRALISED]
            goal = SeedGoal(cohort, seed, fed["metrics"]["pooled_auc"],
                            central["metrics"]["pooled_auc"],
                            local["metrics"]["best_local_pooled_auc"],
                            fed["metrics"]["holdout_sensitivity"],
                            central["metrics"]["holdout_sensitivity"],
                            fed["extra"].get("epochs", 0), central["extra"].get("epochs", 0),
                            _curve(fed), source=str(path))
            if "scores" in fed["extra"] and "scores" in central["extra"]:
                goal.paired_se = paired_se(fed["extra"]["scores"], central["extra"]["scores"])
            goals.append(goal)
    if not goals:
        raise EvidenceError("no goal runs given")
    return sorted(goals, key=lambda g: (*g.budgets, g.seed))


def load_beyond(paths: Sequence[Path], goals: Sequence[SeedGoal]) -> list[BeyondRun]:
    """Federated and pooled runs of other experiments on the goal runs' cohorts and seeds."""
    seeds = {(g.cohort, g.seed) for g in goals}
    runs = []
    for path in paths:
        data = read_experiment(path, EvidenceError)
        cohort = data["settings"].get("cohort", "small")
        for run in data["runs"]:
            if (cohort, run["seed"]) not in seeds:
                raise EvidenceError(f"{path}: cohort '{cohort}' seed {run['seed']} has no goal "
                                    "run to compare with; give its goal run too")
            kind = CENTRALISED if run["arm"] == CENTRALISED else (
                LOCAL_ONLY if run["arm"] == LOCAL_ONLY else FEDERATED)
            if kind == LOCAL_ONLY:
                continue
            runs.append(BeyondRun(cohort, run["seed"], run["arm"], kind,
                                  run["extra"].get("epochs", 0), run["metrics"]["pooled_auc"],
                                  run["metrics"]["holdout_sensitivity"], _curve(run)))
    return runs


def cohort_summary(goals: Sequence[SeedGoal]) -> dict[str, Any]:
    """Pass rates, the 3-seed check's chance, and the AUC difference's spread split into the
    test set's share and training's (the seeds of one cohort at one pair of budgets)."""
    n = len(goals)
    rates = {}
    for i, part in enumerate((*PARTS, "all three")):
        k = sum(all(g.parts) if i == len(PARTS) else g.parts[i] for g in goals)
        low, high = clopper_pearson(k, n)
        rates[part] = {"met": k, "seeds": n, "rate": k / n, "ci": [low, high],
                       "three_seeds": [(k / n) ** CHECK_SEEDS, low ** CHECK_SEEDS,
                                       high ** CHECK_SEEDS]}
    diffs = [g.difference for g in goals]
    mean, sd, ci = mean_interval(diffs)
    ses = [g.paired_se for g in goals if not math.isnan(g.paired_se)]
    test_var = float(np.mean(np.square(ses))) if ses else math.nan
    train_sd = (math.sqrt(max(sd ** 2 - test_var, 0.0))
                if not (math.isnan(sd) or math.isnan(test_var)) else math.nan)
    spread = {name: mean_interval([getattr(g, key) for g in goals])[1]
              for name, key in (("federated", "fed_auc"), ("pooled", "central_auc"))}
    cohort, fed_epochs, central_epochs = goals[0].budgets
    return {"cohort": cohort, "fed_epochs": fed_epochs, "central_epochs": central_epochs,
            "seeds": [g.seed for g in goals], "rates": rates, "auc_sd": spread,
            "difference": {"mean": mean, "sd": sd, "ci95": ci, "values": diffs},
            "test_se": math.sqrt(test_var) if ses else math.nan, "test_se_seeds": len(ses),
            "training_sd": train_sd,
            "part1_chance_now": _chance(mean, sd), "part1_chance_unlimited_test": _chance(
                mean, train_sd),
            "sd_needed": _sd_needed(mean)}


def _chance(mean: float, sd: float) -> float:
    """P(difference >= -margin) for a normal difference with this mean and sd."""
    if math.isnan(mean) or math.isnan(sd):
        return math.nan
    if sd == 0:
        return 1.0 if mean >= -AUC_MARGIN else 0.0
    return float(norm.cdf((mean + AUC_MARGIN) / sd))


def _sd_needed(mean: float, target: float = 0.9) -> float:
    """The spread of the difference at which part 1 alone holds on 3 seeds with probability
    `target` (each seed with target^(1/3)), at this mean; nan when the mean itself misses."""
    if math.isnan(mean) or mean + AUC_MARGIN <= 0:
        return math.nan
    return float((mean + AUC_MARGIN) / norm.ppf(target ** (1 / CHECK_SEEDS)))


def markdown(goals: Sequence[SeedGoal], beyond: Sequence[BeyondRun],
             summaries: Sequence[dict[str, Any]], sources: Sequence[str]) -> str:
    """The report."""
    def met(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines = ["# Issue 17's goal over every finished goal run", "",
             "From " + ", ".join(f"`{s}`" for s in sources) + " (no training; "
             "`ucadi experiment goal-evidence`). Per seed: pooled-test AUC of the federated, "
             "pooled (centralised) and best hospital's own model, hold-out sensitivity of the "
             "federated and pooled models, and the goal's parts.", "",
             "| cohort | seed | epochs fed / pooled | federated AUC | pooled AUC (fed - pooled, "
             "DeLong SE) | best local AUC | hold-out fed / pooled | AUC part | local part | "
             "hold-out part |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for g in goals:
        se = "" if math.isnan(g.paired_se) else f", SE {g.paired_se:.3f}"
        p = g.parts
        lines.append(f"| {g.cohort} | {g.seed} | {g.fed_epochs} / {g.central_epochs} | "
                     f"{g.fed_auc:.3f} | {g.central_auc:.3f} "
                     f"({g.difference:+.3f}{se}) | {g.best_local_auc:.3f} | {g.fed_holdout:.3f}"
                     f" / {g.central_holdout:.3f} | {met(p[0])} | {met(p[1])} | {met(p[2])} |")
    for s in summaries:
        d = s["difference"]
        lines += ["", f"## Cohort `{s['cohort']}`, federation {s['fed_epochs']} / pooled model "
                  f"{s['central_epochs']} epochs: {len(s['seeds'])} seeds", "",
                  "| part | seeds met | rate (95 % Clopper-Pearson) | chance a 3-seed check "
                  "passes |", "|---|---|---|---|"]
        for part, r in s["rates"].items():
            lines.append(f"| {part} | {r['met']} / {r['seeds']} | {r['rate']:.2f} "
                         f"({r['ci'][0]:.2f}-{r['ci'][1]:.2f}) | {r['three_seeds'][0]:.2f} "
                         f"({r['three_seeds'][1]:.2f}-{r['three_seeds'][2]:.2f}) |")
        spread = "" if math.isnan(d["ci95"]) else (f" (95 % t-interval {d['mean'] - d['ci95']:+.3f}"
                                                    f" to {d['mean'] + d['ci95']:+.3f})")
        lines += ["", f"- Federated minus pooled AUC over seeds: mean {d['mean']:+.3f}{spread}, "
                  f"standard deviation {d['sd']:.3f}; each model's own AUC over seeds: "
                  f"standard deviation {s['auc_sd']['federated']:.3f} (federated), "
                  f"{s['auc_sd']['pooled']:.3f} (pooled)."]
        if s["test_se_seeds"]:
            lines.append(
                f"- The test set's share (paired DeLong SE, root mean square over the "
                f"{s['test_se_seeds']} seed(s) with saved scores): {s['test_se']:.3f}; what is "
                f"left for training (cohort, initial weights, sampling): "
                f"{s['training_sd']:.3f}"
                + (" (fewer than 3 seeds with scores: a rough split)."
                   if s["test_se_seeds"] < ROUGH_BELOW else "."))
            lines.append(
                f"- Normal model of the difference: part 1 holds on a seed with probability "
                f"{s['part1_chance_now']:.2f} now, {s['part1_chance_unlimited_test']:.2f} with "
                f"an unlimited test set (training spread only). For part 1 alone to pass a "
                f"3-seed check 9 times in 10 at this mean, the spread must fall to "
                f"{_text(s['sd_needed'])}.")
    if beyond:
        lines += ["", "## Beyond the goal's budgets, on the same seeds", "",
                  "| cohort | seed | run | epochs | AUC | goal's pooled AUC (epochs) | "
                  "difference | hold-out |", "|---|---|---|---|---|---|---|---|"]
        by_seed = {(g.cohort, g.seed): g for g in goals}
        for b in beyond:
            g = by_seed[(b.cohort, b.seed)]
            lines.append(f"| {b.cohort} | {b.seed} | {b.arm} ({b.kind}) | {b.epochs} | "
                         f"{b.auc:.3f} | {g.central_auc:.3f} ({g.central_epochs}) | "
                         f"{b.auc - g.central_auc:+.3f} | {b.holdout:.3f} |")
    return "\n".join(lines) + "\n\n![curves over rounds and seeds](evidence.png)\n"


def _text(value: float) -> str:
    return "n/a (the mean itself misses)" if math.isnan(value) else f"{value:.3f}"


def plot(path: Path, goals: Sequence[SeedGoal], beyond: Sequence[BeyondRun]) -> None:
    """One panel per seed: the federation's pooled-test AUC over local epochs (one sampling),
    its final figure (5 samplings), the pooled and best local models', and runs beyond the
    budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(goals))
    rows = math.ceil(len(goals) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows),
                                squeeze=False, sharey=True)
    for axis, g in zip(axes.flat, goals, strict=False):
        if g.curve:
            axis.plot(*zip(*g.curve, strict=True), color="C0", linewidth=1.2,
                      label=f"federated, {g.fed_epochs} epochs")
        axis.scatter([g.fed_epochs], [g.fed_auc], color="C0", zorder=3)
        axis.axhline(g.central_auc, color="C1", linestyle="--", linewidth=1,
                     label=f"pooled, {g.central_epochs} epochs")
        axis.axhline(g.central_auc - AUC_MARGIN, color="C1", linestyle=":", linewidth=0.8)
        axis.axhline(g.best_local_auc, color="C2", linestyle="-.", linewidth=1,
                     label="best local")
        for i, b in enumerate(r for r in beyond if (r.cohort, r.seed) == (g.cohort, g.seed)):
            color = f"C{3 + i}"
            if b.kind == FEDERATED:
                if b.curve:
                    axis.plot(*zip(*b.curve, strict=True), color=color, linewidth=1)
                axis.scatter([b.epochs], [b.auc], color=color, zorder=3,
                             label=f"{b.arm}, {b.epochs} epochs")
            else:
                axis.axhline(b.auc, color=color, linestyle="--", linewidth=1,
                             label=f"pooled, {b.epochs} epochs")
        axis.set_title(f"{g.cohort} seed {g.seed}" + ("" if all(g.parts) else " (goal missed)"),
                       fontsize=9)
        longest = max([g.fed_epochs] + [b.epochs for b in beyond
                                         if (b.cohort, b.seed) == (g.cohort, g.seed)])
        axis.set(ylim=(0.4, 1.0), xlim=(0, longest + 1), xlabel="local epochs")
        axis.legend(fontsize=6, loc="lower right")
    for axis in list(axes.flat)[len(goals):]:
        axis.axis("off")
    figure.suptitle("pooled-test AUC over rounds, per seed (curves: 1 sampling per CT; dots "
                    "and lines: final, 5 samplings; dotted: pooled - 0.02)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_evidence(out: Path, goal_paths: Sequence[Path],
                   beyond_paths: Sequence[Path] = ()) -> list[Path]:
    """evidence.md, evidence.png and evidence.json under `out`."""
    goals = load_goals(goal_paths)
    beyond = load_beyond(beyond_paths, goals)
    summaries = [cohort_summary([g for g in goals if g.budgets == group])
                 for group in dict.fromkeys(g.budgets for g in goals)]
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "evidence.md", out / "evidence.png", out / "evidence.json"]
    sources = [str(p) for p in [*goal_paths, *beyond_paths]]
    files[0].write_text(markdown(goals, beyond, summaries, sources))
    plot(files[1], goals, beyond)
    files[2].write_text(json.dumps({
        "sources": sources, "groups": summaries,
        "seeds": [{**{k: v for k, v in vars(g).items() if k != "curve"}, "parts": g.parts}
                  for g in goals],
        "beyond": [{k: v for k, v in vars(b).items() if k != "curve"} for b in beyond]},
        indent=2, default=float))
    return files
