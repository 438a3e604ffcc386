"""`ucadi experiment`: the studies run from the command line and report mean, spread and a
t-interval over seeds as markdown, PNG and JSON; the medium cohort is large enough to compare."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ucadi.cli import main
from ucadi.ct.synth.sites import plan_cohort
from ucadi.experiments.report import mean_interval

pytestmark = pytest.mark.slow


def test_mean_interval_uses_student_t_over_seeds() -> None:
    mean, sd, half = mean_interval([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9) and sd == pytest.approx(0.1)
    assert half == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert math.isnan(mean_interval([0.7])[2])
    assert mean_interval([float("nan"), 0.5, 0.7])[0] == pytest.approx(0.6)


def test_the_medium_cohort_has_over_150_pooled_test_cts() -> None:
    plans = plan_cohort("medium", seed=0)
    training_sites = {p.site for p in plans if p.split == "train"}
    pooled_test = [p for p in plans if p.split == "test" and p.site in training_sites]
    assert len(pooled_test) >= 150
    assert {p.binary_label for p in pooled_test} == {0, 1}


def test_small_eval4x_trains_on_smalls_counts_and_evaluates_on_four_times_as_many() -> None:
    def counts(preset: str) -> dict[str, int]:
        plans = plan_cohort(preset, seed=0)
        return {split: sum(p.split == split for p in plans)
                for split in ("train", "val", "test", "holdout")}

    small, wide = counts("small"), counts("small-eval4x")
    assert wide["train"] == small["train"] == 4 * 32
    assert (wide["val"], wide["test"], wide["holdout"]) == (4 * small["val"], 4 * small["test"],
                                                            4 * small["holdout"]) == (160, 240, 120)


def test_optimizer_study_runs_from_the_command_line(tmp_path: Path, tiny_cohort: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cohorts = tmp_path / "work" / "cohorts"
    cohorts.mkdir(parents=True)
    (cohorts / "tiny-seed0").symlink_to(tiny_cohort.parent)
    out = tmp_path / "report"
    code = main(["experiment", "optimizers", "--cohort", "tiny", "--seeds", "0", "1",
                 "--budget", "2", "--arms", "fedavg", "fedbn", "--plaintext-simulation",
                 "--work", str(tmp_path / "work"), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "seed 1 | fedbn" in printed and "pooled AUC" in printed
    data = json.loads((out / "optimizers.json").read_text())
    assert [row["arm"] for row in data["summary"]] == ["fedavg", "fedbn", "centralised"]
    fedavg = data["summary"][0]
    assert fedavg["epochs"] == 2 and fedavg["seeds"] == [0, 1]
    assert data["summary"][2]["epochs"] == 1  # the pooled model: half the budget
    assert all(0 <= v <= 1 for v in fedavg["pooled_auc"]["values"])
    assert fedavg["bytes_total"]["mean"] > 0
    markdown = (out / "optimizers.md").read_text()
    assert "| fedbn | E=1, fedavg + FedBN | 2 |" in markdown
    assert "FedBN: each site's own model" in markdown  # what its inference service serves
    fedbn_runs = [r for r in data["runs"] if r["arm"] == "fedbn"]
    assert all(set(r["extra"]["site_models"]) == {"main-campus", "optical-valley",
                                                  "sino-french", "nccid-uk"} for r in fedbn_runs)
    assert (out / "optimizers.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "optimizers.partial.jsonl").exists()


@pytest.fixture(scope="module")
def goal_run(tmp_path_factory: pytest.TempPathFactory, tiny_cohort: Path) -> Path:
    """`ucadi experiment goal` on the tiny cohort, once for the tests that read its output."""
    root = tmp_path_factory.mktemp("goal-run")
    cohorts = root / "work" / "cohorts"
    cohorts.mkdir(parents=True)
    (cohorts / "tiny-seed0").symlink_to(tiny_cohort.parent)
    out = root / "goal"
    assert main(["experiment", "goal", "--cohort", "tiny", "--seeds", "0", "--budget", "2",
                 "--plaintext-simulation", "--work", str(root / "work"),
                 "--out", str(out)]) == 0
    return out


def test_goal_study_checks_the_goal_seed_by_seed(goal_run: Path) -> None:
    out = goal_run
    data = json.loads((out / "goal.json").read_text())
    rows = {row["arm"]: row for row in data["summary"]}
    assert list(rows) == ["federated (demo)", "local-only", "centralised"]
    assert rows["federated (demo)"]["describe"] == "E=1, fedavg + FedBN"
    fed_auc = rows["federated (demo)"]["pooled_auc"]["values"][0]
    central_auc = rows["centralised"]["pooled_auc"]["values"][0]
    best_local = rows["local-only"]["best_local_pooled_auc"]["values"][0]
    fed_hold = rows["federated (demo)"]["holdout_sensitivity"]["values"][0]
    central_hold = rows["centralised"]["holdout_sensitivity"]["values"][0]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    expected = (f"| 0 | {fed_auc:.3f} vs {central_auc:.3f}: "
                f"{verdict(fed_auc >= central_auc - 0.02)} | {fed_auc:.3f} vs {best_local:.3f}: "
                f"{verdict(fed_auc > best_local)} | {fed_hold:.3f} vs {central_hold:.3f}: "
                f"{verdict(fed_hold >= central_hold - 0.05)} |")
    markdown = (out / "goal.md").read_text()
    assert expected in markdown
    assert f"- pooled-test AUC: {fed_auc - central_auc:+.3f}" in markdown
    assert "Youden's J on validation" in markdown and data["settings"]["operating_point"] == \
        "youden"
    fed_threshold = rows["federated (demo)"]["threshold"]["values"][0]
    assert f"| 0 | {fed_threshold:.3f} | " in markdown  # the thresholds table
    # Every model's per-CT scores travel with the run, so another operating point can be
    # applied later without retraining.
    runs = {run["arm"]: run for run in data["runs"]}
    for arm in ("federated (demo)", "centralised"):
        scores = runs[arm]["extra"]["scores"]
        assert set(scores["sets"]) == {"pooled test", "wuhan-union (hold-out)",
                                       "wuhan-tianyou (hold-out)"}
        for block in [scores["validation"], *scores["sets"].values()]:
            assert len(block["case_ids"]) == len(block["labels"]) == len(block["covid"]) > 0
            assert all(0 <= p <= 1 for p in block["covid"])
        assert set(scores["sets"]["wuhan-union (hold-out)"]["labels"]) == {1}
    assert set(runs["local-only"]["extra"]["per_site_scores"]) == {
        "main-campus", "optical-valley", "sino-french", "nccid-uk"}


def test_rescoring_at_youden_gives_each_arms_metrics_bit_for_bit(goal_run: Path) -> None:
    """Every arm of a finished run (as its JSON file carries it), re-scored at Youden's J,
    has the run's own metrics bit for bit; a stricter operating point changes only the
    threshold-dependent ones."""
    from ucadi.experiments.rescore import load_runs, rescore_result
    from ucadi.learn.evaluate import YOUDEN, OperatingPoint

    _, results = load_runs([goal_run / "goal.json"])
    assert {r.arm for r in results} == {"federated (demo)", "local-only", "centralised"}
    for result in results:
        again = rescore_result(result, YOUDEN)
        assert json.dumps({k: again.metrics[k] for k in result.metrics}) == json.dumps(
            result.metrics), result.arm
        strict = rescore_result(result, OperatingPoint.parse("specificity:1"))
        assert strict.metrics["pooled_auc"] == result.metrics["pooled_auc"]
        assert strict.metrics["pooled_specificity"] >= result.metrics["pooled_specificity"] \
            or math.isnan(result.metrics["pooled_specificity"])
