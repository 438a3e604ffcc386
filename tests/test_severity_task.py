"""Issue 24: the severity task (grade I/II/III of COVID-19 cases) and the multiclass statistics
of the four-class and severity reports: quadratic-weighted kappa, per-class rates, macro AUC,
`ucadi train --task severity` and `ucadi evaluate` from the model card's task."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ucadi.cli import main
from ucadi.ct.synth import read_manifest
from ucadi.learn.data import task_label, usable_records
from ucadi.learn.evaluate import (
    card_task,
    clinical_report,
    multiclass_report,
    severity_report,
    site_validation,
)
from ucadi.learn.recipe import SEVERITY_CLASS_NAMES, RecipeError, TrainingRecipe
from ucadi.learn.report import markdown_report
from ucadi.learn.stats import (
    StatisticsError,
    macro_auc_ci,
    per_class_rates,
    quadratic_weighted_kappa,
)

torch.set_num_threads(1)


def test_quadratic_weighted_kappa_matches_a_hand_computed_example():
    # truth 0,0,1,1,2,2 called 0,1,1,1,2,0. Weights (i-j)^2/4: observed sum 0.25 + 1 = 1.25;
    # marginals truth (2,2,2), calls (2,3,1) give expected sum 7/12 + 1/4 + 11/12 = 1.75;
    # kappa = 1 - 1.25 / 1.75 = 2/7.
    truth, called = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    assert quadratic_weighted_kappa(truth, called, 3) == pytest.approx(2 / 7, abs=1e-12)
    assert quadratic_weighted_kappa(truth, truth, 3) == pytest.approx(1.0)
    # Calling every grade its mirror image (I <-> III) is worse than chance.
    assert quadratic_weighted_kappa(truth, [2, 2, 1, 1, 0, 0], 3) == pytest.approx(-1.0)
    # A one-grade miss costs less than a two-grade one.
    near = quadratic_weighted_kappa([0, 1, 2, 2], [0, 1, 2, 1], 3)
    far = quadratic_weighted_kappa([0, 1, 2, 2], [0, 1, 2, 0], 3)
    assert near > far
    assert np.isnan(quadratic_weighted_kappa([1, 1], [1, 1], 3))  # no chance disagreement
    with pytest.raises(StatisticsError, match="0..2"):
        quadratic_weighted_kappa([0, 3], [0, 1], 3)


def test_per_class_rates_are_one_vs_rest_sensitivity_and_specificity():
    matrix = np.array([[3, 1, 0],   # true grade I: 3 right, 1 called II
                       [1, 2, 1],
                       [0, 0, 0]])  # no grade III case
    rates = per_class_rates(matrix)
    assert rates[0] == pytest.approx((3 / 4, 3 / 4))  # 4 others, 1 of them called I
    assert rates[1] == pytest.approx((2 / 4, 3 / 4))
    assert np.isnan(rates[2][0]) and rates[2][1] == pytest.approx(7 / 8)


def test_macro_auc_is_the_mean_one_vs_rest_auc_with_a_bootstrap_interval():
    truth = np.array([0, 0, 1, 1, 2, 2])
    perfect = np.eye(3)[truth] * 0.8 + 0.1
    auc, low, high, classes = macro_auc_ci(perfect, truth, resamples=200)
    assert (auc, low, high, classes) == (1.0, 1.0, 1.0, [0, 1, 2])
    # Class 0 ranked perfectly (AUC 1), class 1 and 2 columns uninformative (AUC 0.5 each).
    probs = np.column_stack([truth == 0, np.full(6, 0.3), np.full(6, 0.3)]).astype(float)
    auc, low, high, _ = macro_auc_ci(probs, truth, resamples=200, seed=1)
    assert auc == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert low <= auc <= high
    with pytest.raises(StatisticsError, match="two classes"):
        macro_auc_ci(perfect[:2], truth[:2])


def _record(i, label, severity, site="main-campus"):
    return SimpleNamespace(case_id=f"c{i}", patient_id=f"p{i}", site=site, label=label,
                           binary_label=int(label == "covid"), severity=severity)


def test_severity_labels_use_graded_covid_cases_only():
    assert task_label(_record(0, "covid", 3), "severity") == 2
    assert task_label(_record(1, "covid", 0), "severity") is None  # COVID-19, no grade
    assert task_label(_record(2, "healthy", 0), "severity") is None
    assert task_label(_record(3, "non_covid", 0), "severity") is None
    assert TrainingRecipe(task="severity").class_names == SEVERITY_CLASS_NAMES
    assert TrainingRecipe(task="severity").loss_weights == (1.0, 1.0, 1.0)
    with pytest.raises(RecipeError, match="severity"):
        TrainingRecipe(task="grades")


def test_severity_report_keeps_graded_cases_and_reports_kappa_per_site():
    records = [_record(i, "covid", 1 + i % 3, ("main-campus", "sino-french")[i % 2])
               for i in range(12)] + [_record(20, "healthy", 0), _record(21, "covid", 0)]
    probs = np.full((len(records), 3), 0.1)
    for row, record in enumerate(records):
        probs[row, max(record.severity, 1) - 1] = 0.8
    probs[0] = [0.1, 0.8, 0.1]  # one grade I case called II
    report = severity_report(probs, records, SEVERITY_CLASS_NAMES, bootstrap=100)
    assert report["cases"] == 12 and report["excluded_cases"] == 2
    grades = report["severity"]
    assert np.array(grades["confusion"]).sum() == 12 and np.trace(grades["confusion"]) == 11
    assert grades["per_class"]["severity_I"]["sensitivity"] == pytest.approx(3 / 4)
    assert grades["per_class"]["severity_II"]["specificity"] == pytest.approx(7 / 8)
    assert 0.8 < grades["quadratic_kappa"] < 1.0
    assert grades["macro_auc_ci_low"] <= grades["macro_auc"] <= grades["macro_auc_ci_high"]
    assert set(report["per_site"]) == {"main-campus", "sino-french"}
    text = markdown_report(report, "unit")
    assert "quadratic-weighted kappa" in text and "| severity_I | 4 | 0.750 |" in text
    with pytest.raises(StatisticsError, match="severity_report"):
        clinical_report(probs, records, SEVERITY_CLASS_NAMES, threshold=0.5)


def test_site_validation_of_a_severity_model_is_macro_over_grades():
    truth = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 2, 2]]
    result = site_validation(probs, truth, "severity", 0.5)
    assert result["sensitivity"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert result["specificity"] == pytest.approx((1 + 0.75 + 1) / 3)
    assert 0.5 < result["auc"] <= 1.0


def test_card_task_reads_the_field_then_the_recipe_then_the_classes():
    card = SimpleNamespace(task="", training={}, class_names=list(SEVERITY_CLASS_NAMES))
    assert card_task(card) == "severity"
    card.training = {"recipe": {"task": "four_class"}}
    with pytest.raises(StatisticsError, match="four_class"):
        card_task(card)
    assert multiclass_report(np.zeros((0, 3)), [], SEVERITY_CLASS_NAMES)["cases"] == 0


@pytest.fixture(scope="module")
def severity_model(tiny_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("severity-model")
    code = main(["train", "--data", str(tiny_cohort.parent), "--all-sites", "--task",
                 "severity", "--epochs", "1", "--batch-size", "4", "--no-progress",
                 "--threads", "1", "--out", str(out)])
    assert code == 0
    return out


def test_train_severity_records_the_task_and_graded_cases_in_the_card(severity_model,
                                                                       tiny_cohort):
    card = json.loads((severity_model / "card.json").read_text())
    assert card["task"] == "severity" and card["class_names"] == list(SEVERITY_CLASS_NAMES)
    records = read_manifest(tiny_cohort)
    graded = usable_records([r for r in records if r.split == "train"], "severity")
    assert card["training"]["train"]["cases"] == len(graded)
    assert sum(card["training"]["train"]["per_class"].values()) == len(graded)
    assert "threshold" not in card["metrics"]
    assert card["metrics"]["validation"]["cases"] == len(usable_records(
        [r for r in records if r.split == "val"], "severity"))


def test_evaluate_a_severity_model_reports_grades_from_its_card(severity_model, tiny_cohort,
                                                                tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(severity_model), "--data", str(tiny_cohort.parent),
                 "--split", "holdout", "--samples", "1", "--bootstrap", "100",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    holdout = [r for r in read_manifest(tiny_cohort) if r.split == "holdout"]
    assert metrics["task"] == "severity" and metrics["cases"] == len(holdout)
    grades = metrics["severity"]
    assert np.array(grades["confusion"]).sum() == len(holdout)
    assert -1.0 <= grades["quadratic_kappa"] <= 1.0 or np.isnan(grades["quadratic_kappa"])
    assert "grade" in (out / "report.md").read_text()
    for png in ("confusion.png", "roc_classes.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(severity_model), "--data", str(tiny_cohort.parent),
                 "--threshold", "0.5", "--out", str(tmp_path / "bad")]) == 2
    assert "--threshold applies to COVID-19 models" in capsys.readouterr().err


def test_evaluate_a_four_class_model_adds_the_four_class_outputs(tiny_cohort, tmp_path):
    model = tmp_path / "model"
    assert main(["train", "--data", str(tiny_cohort.parent), "--site", "main-campus", "--task",
                 "four_class", "--epochs", "1", "--batch-size", "4", "--no-progress",
                 "--threads", "1", "--out", str(model)]) == 0
    assert json.loads((model / "card.json").read_text())["task"] == "four_class"
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(model), "--data", str(tiny_cohort.parent),
                 "--samples", "1", "--bootstrap", "100", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    four = metrics["four_class"]
    assert metrics["task"] == "four_class" and "ct_level" in metrics
    assert np.array(four["confusion"]).sum() == four["cases"] > 0
    assert set(four["per_class"]) == {"healthy", "covid", "other_viral", "bacterial"}
    assert "## Four classes" in (out / "report.md").read_text()
    assert (out / "roc_classes.png").read_bytes()[:4] == b"\x89PNG"


def test_training_severity_without_graded_cases_is_refused_naming_the_task(tiny_cohort,
                                                                          tmp_path):
    from ucadi.learn.workflow import train_model

    ungraded = [r for r in read_manifest(tiny_cohort) if r.split == "train" and
                not r.binary_label]
    with pytest.raises(RecipeError, match="usable for task 'severity'.*grade 1-3"):
        train_model(ungraded, [], arch="densenet3d", preset="cpu-small",
                    recipe=TrainingRecipe(task="severity", total_epochs=1, warmup_epochs=0),
                    out_dir=tmp_path, progress=False)
    assert not (tmp_path / "card.json").exists()
