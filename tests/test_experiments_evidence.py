"""`ucadi experiment goal-evidence`: finished goal runs' seeds summarised without training, on
runs written by hand (expected pass counts, intervals and chances computed by hand)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import norm

from ucadi.cli import main
from ucadi.experiments.evidence import clopper_pearson, cohort_summary, load_goals, paired_se
from ucadi.learn.stats import delong_test

SETTINGS = {"study": "goal", "cohort": "small", "budget": 24, "central_budget": 0,
            "preset": "cpu-small", "lr": 0.05, "batch_size": 8, "warmup_epochs": 1,
            "plaintext_simulation": True}


def metrics(auc: float, holdout: float, best_local: float | None = None) -> dict[str, float]:
    values = {"pooled_auc": auc, "holdout_sensitivity": holdout}
    if best_local is not None:
        values["best_local_pooled_auc"] = best_local
    return values


def seed_runs(seed: int, fed: tuple[float, float], central: tuple[float, float],
              best_local: float, curve: bool = False,
              scores: dict[str, Any] | None = None, budget: int = 24) -> list[dict[str, Any]]:
    points = [{"round": r, "pooled_auc_1_sampling": 0.5 + r / 60} for r in range(1, budget + 1)]
    extra = {"epochs": budget, **({"scores": scores["fed"]} if scores else {})}
    central_extra = {"epochs": budget // 2, **({"scores": scores["central"]} if scores else {})}
    return [{"arm": "federated (demo)", "seed": seed, "metrics": metrics(*fed),
             "curve": points if curve else [], "extra": extra},
            {"arm": "local-only", "seed": seed, "metrics": metrics(0.6, 0.5, best_local),
             "curve": [], "extra": {"epochs": budget}},
            {"arm": "centralised", "seed": seed, "metrics": metrics(*central), "curve": [],
             "extra": central_extra}]


def write(path: Path, runs: list[dict[str, Any]], **settings: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": {**SETTINGS, **settings}, "runs": runs}))
    return path


def pooled(covid: list[float], labels: list[int]) -> dict[str, Any]:
    return {"sets": {"pooled test": {"case_ids": [f"ct{i}" for i in range(len(covid))],
                                     "labels": labels, "covid": covid}}}


LABELS = [0, 0, 0, 0, 1, 1, 1, 1]
SCORES = {"fed": pooled([0.1, 0.3, 0.6, 0.2, 0.5, 0.9, 0.8, 0.4], LABELS),
          "central": pooled([0.2, 0.1, 0.3, 0.7, 0.6, 0.8, 0.9, 0.5], LABELS)}

# Seeds 0-3: (fed AUC, hold-out), (pooled AUC, hold-out), best local. Parts per seed:
# 0 all met; 1 AUC part missed (0.80 < 0.85 - 0.02); 2 local part missed (0.90 <= 0.90);
# 3 hold-out part missed (0.60 < 0.70 - 0.05).
SEEDS = {0: ((0.90, 0.80), (0.88, 0.80), 0.70), 1: ((0.80, 0.80), (0.85, 0.70), 0.60),
         2: ((0.90, 0.80), (0.89, 0.80), 0.90), 3: ((0.86, 0.60), (0.84, 0.70), 0.70)}


@pytest.fixture
def goal_runs(tmp_path: Path) -> list[Path]:
    first = write(tmp_path / "a" / "goal.json",
                  seed_runs(0, *SEEDS[0], curve=True, scores=SCORES)
                  + seed_runs(1, *SEEDS[1]))
    second = write(tmp_path / "b" / "goal.json", seed_runs(2, *SEEDS[2]) + seed_runs(3, *SEEDS[3]))
    return [first, second]


def test_each_seeds_parts_pass_rates_and_the_three_seed_chance(goal_runs: list[Path]) -> None:
    goals = load_goals(goal_runs)
    assert [g.parts for g in goals] == [(True, True, True), (False, True, True),
                                        (True, False, True), (True, True, False)]
    summary = cohort_summary(goals)
    rates = summary["rates"]
    assert [rates[p]["met"] for p in rates] == [3, 3, 3, 1]
    assert rates["all three"]["three_seeds"][0] == pytest.approx(0.25 ** 3)
    # Clopper-Pearson for 3 of 4: (0.1941, 0.9937); 1 of 4: (0.0063, 0.8059).
    assert rates["all three"]["ci"] == pytest.approx([0.0063, 0.8059], abs=1e-4)
    low, high = rates["AUC >= pooled - 0.02"]["ci"]
    assert (low, high) == pytest.approx((0.1941, 0.9937), abs=1e-4)
    assert rates["AUC >= pooled - 0.02"]["three_seeds"][1] == pytest.approx(low ** 3)
    diffs = [0.02, -0.05, 0.01, 0.02]
    assert summary["difference"]["values"] == pytest.approx(diffs)
    mean, sd = float(np.mean(diffs)), float(np.std(diffs, ddof=1))
    assert summary["auc_sd"]["pooled"] == pytest.approx(np.std([0.88, 0.85, 0.89, 0.84], ddof=1))
    assert summary["part1_chance_now"] == pytest.approx(norm.cdf((mean + 0.02) / sd))
    # Part 1 alone on 3 seeds 9 times in 10 needs each seed at 0.9^(1/3).
    assert summary["sd_needed"] == pytest.approx((mean + 0.02) / norm.ppf(0.9 ** (1 / 3)))


def test_clopper_pearson_matches_the_exact_binomial_tails() -> None:
    from scipy.stats import binom

    low, high = clopper_pearson(3, 7)
    assert binom.sf(2, 7, low) == pytest.approx(0.025)   # P(X >= 3 | low) = 2.5 %
    assert binom.cdf(3, 7, high) == pytest.approx(0.025)  # P(X <= 3 | high) = 2.5 %
    assert clopper_pearson(0, 2)[0] == 0.0 and clopper_pearson(2, 2)[1] == 1.0


def test_the_test_sets_share_is_the_paired_delong_error(goal_runs: list[Path]) -> None:
    goals = load_goals(goal_runs)
    se = paired_se(SCORES["fed"], SCORES["central"])
    assert goals[0].paired_se == pytest.approx(se)
    assert all(math.isnan(g.paired_se) for g in goals[1:])  # no saved scores
    # The same variance as DeLong's paired test: p = 2 (1 - Phi(|d| / se)).
    fed = SCORES["fed"]["sets"]["pooled test"]["covid"]
    central = SCORES["central"]["sets"]["pooled test"]["covid"]
    from ucadi.learn.stats import delong

    aucs = delong(np.stack([fed, central]), np.asarray(LABELS)).aucs
    assert delong_test(fed, central, np.asarray(LABELS)) == pytest.approx(
        2 * norm.sf(abs(aucs[0] - aucs[1]) / se))
    summary = cohort_summary(goals)
    assert summary["test_se"] == pytest.approx(se) and summary["test_se_seeds"] == 1
    assert summary["training_sd"] == pytest.approx(
        math.sqrt(max(summary["difference"]["sd"] ** 2 - se ** 2, 0.0)))


def test_the_command_writes_the_report_and_runs_beyond_the_budget(
        tmp_path: Path, goal_runs: list[Path]) -> None:
    beyond = write(tmp_path / "b48" / "optimizers.json",
                   [{"arm": "fedbn", "seed": 1, "metrics": metrics(0.91, 0.9),
                     "curve": [{"round": r, "pooled_auc_1_sampling": 0.9} for r in range(1, 49)],
                     "extra": {"epochs": 48}},
                    {"arm": "centralised", "seed": 1, "metrics": metrics(0.87, 0.8),
                     "curve": [], "extra": {"epochs": 24}}], study="optimizers")
    out = tmp_path / "evidence"
    assert main(["experiment", "goal-evidence", *map(str, goal_runs), "--beyond", str(beyond),
                 "--out", str(out)]) == 0
    text = (out / "evidence.md").read_text()
    assert "| small | 1 | 24 / 12 | 0.800 | 0.850 (-0.050) | 0.600 | 0.800 / 0.700 | " \
           "**not met** | met | met |" in text
    assert "| all three | 1 / 4 | 0.25 (0.01-0.81) | 0.02 (0.00-0.52) |" in text
    assert "| small | 1 | fedbn (federated) | 48 | 0.910 | 0.850 (12) | +0.060 | 0.900 |" in text
    assert "| small | 1 | centralised (centralised) | 24 | 0.870 | 0.850 (12) | +0.020 |" in text
    assert "(fewer than 3 seeds with scores: a rough split)" in text
    assert (out / "evidence.png").stat().st_size > 10_000
    saved = json.loads((out / "evidence.json").read_text())
    assert [(g["cohort"], g["fed_epochs"], g["central_epochs"], g["rates"]["all three"]["met"])
            for g in saved["groups"]] == [("small", 24, 12, 1)]
    assert [s["seed"] for s in saved["seeds"]] == [0, 1, 2, 3]


def test_seeds_at_other_budgets_are_summarised_apart(tmp_path: Path,
                                                     goal_runs: list[Path]) -> None:
    doubled = write(tmp_path / "b48" / "goal.json",
                    seed_runs(8, (0.95, 0.9), (0.90, 0.9), 0.8, budget=48)
                    + seed_runs(9, (0.94, 0.9), (0.93, 0.9), 0.8, budget=48), budget=48)
    out = tmp_path / "evidence"
    assert main(["experiment", "goal-evidence", *map(str, goal_runs), str(doubled),
                 "--out", str(out)]) == 0
    groups = json.loads((out / "evidence.json").read_text())["groups"]
    assert [(g["fed_epochs"], g["central_epochs"], g["seeds"]) for g in groups] == [
        (24, 12, [0, 1, 2, 3]), (48, 24, [8, 9])]
    assert groups[1]["difference"]["values"] == pytest.approx([0.05, 0.01])
    assert groups[1]["rates"]["all three"]["met"] == 2
    text = (out / "evidence.md").read_text()
    assert "## Cohort `small`, federation 24 / pooled model 12 epochs: 4 seeds" in text
    assert "## Cohort `small`, federation 48 / pooled model 24 epochs: 2 seeds" in text
    assert "| small | 8 | 48 / 24 | 0.950 |" in text


def test_runs_that_do_not_belong_together_are_refused_by_name(
        tmp_path: Path, goal_runs: list[Path]) -> None:
    def refused(*args: str) -> str:
        with pytest.raises(SystemExit) as error:
            main(["experiment", "goal-evidence", *args, "--out", str(tmp_path / "o")])
        return str(error.value)

    assert "seed 0 appears in more than one goal run" in refused(str(goal_runs[0]),
                                                                 str(goal_runs[0]))
    other = write(tmp_path / "opt.json", seed_runs(5, *SEEDS[0]), study="optimizers")
    assert "'optimizers' experiment, not a goal run" in refused(str(other))
    rescored = write(tmp_path / "spec.json", seed_runs(7, *SEEDS[0]),
                     operating_point="specificity:0.9")
    assert "chose thresholds by 'specificity:0.9'" in refused(str(goal_runs[0]), str(rescored))
    assert "lacks the arms ['local-only']" in refused(str(write(
        tmp_path / "partial.json", [r for r in seed_runs(4, *SEEDS[0])
                                    if r["arm"] != "local-only"])))
    assert "seed 5 has no goal run to compare with" in refused(str(goal_runs[0]), "--beyond",
                                                               str(other))
    (tmp_path / "junk.json").write_text("[1]")
    assert "not an experiment's JSON" in refused(str(tmp_path / "junk.json"))
