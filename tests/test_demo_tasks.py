"""Issue 24: the demo's comparison for a four-class and a severity federation. The demo's own
end-to-end test (tests/test_demo.py) runs the binary federation as processes; these check the
scoring and the report for the other tasks on fixed probabilities and on the tiny cohort."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ucadi.ct.synth import read_manifest
from ucadi.demo.compare import POOLED, ModelScores, StackCache, evaluate_model, result_from_scores
from ucadi.demo.federation import FederationPlan
from ucadi.demo.report import write_comparison
from ucadi.learn.data import usable_records
from ucadi.learn.recipe import FOUR_CLASS_NAMES, SEVERITY_CLASS_NAMES
from ucadi.learn.workflow import preprocess_for
from ucadi.model.layout import initial_model

SITES = ["main-campus", "nccid-uk"]
SUMMARY = {"federation": "ucadi-demo", "rounds": [
    {"round": 1, "sites": SITES, "bytes_in": 1000, "global_bytes": 500, "seconds": 1.0}]}
MODELS = ["local main-campus", "local nccid-uk", "federated", "centralised"]


def _cohort():
    """Test and validation records of two sites and a COVID-only hold-out site, with labels
    from every class, the UK-style binary-only label and severity grades."""
    labels = ["healthy", "covid", "other_viral", "bacterial", "covid", "covid"]
    records, graded = [], 0
    for site, split, count in (("main-campus", "test", 12), ("nccid-uk", "test", 6),
                               ("main-campus", "val", 6), ("wuhan-union", "holdout", 6)):
        for i in range(count):
            label = "covid" if split == "holdout" else labels[i % len(labels)]
            if site == "nccid-uk" and label != "covid":
                label = "non_covid"
            graded += label == "covid"
            records.append(SimpleNamespace(
                case_id=f"{site}-{split}-{i}", patient_id=f"{site}{i}", site=site, split=split,
                label=label, binary_label=int(label == "covid"),
                severity=1 + graded % 3 if label == "covid" else 0))
    return records


def _test_sets(records):
    sets = {site: tuple(r for r in records if r.site == site and r.split == "test")
            for site in SITES}
    sets[POOLED] = tuple(r for r in records if r.split == "test")
    sets["wuhan-union (hold-out)"] = tuple(r for r in records if r.split == "holdout")
    return sets


def _scores(records, columns, truth_of, seed):
    """Probabilities leaning to each record's true column, with noise of `seed`."""
    rng = np.random.default_rng(seed)
    test = {}
    for record in records:
        row = rng.random(len(columns)) * 0.6
        row[truth_of(record)] += 0.5
        test[record.case_id] = row / row.sum()
    return test


def _plan(tmp_path: Path, task: str) -> FederationPlan:
    return FederationPlan(root=tmp_path, manifest=tmp_path / "manifest.csv", sites=SITES,
                          rounds=1, task=task, recipe={"total_epochs": 1, "warmup_epochs": 0})


def test_four_class_demo_report_adds_the_papers_four_class_outputs(tmp_path: Path) -> None:
    records = _cohort()
    test_sets = _test_sets(records)
    val = [r for r in records if r.split == "val"]

    def truth(record):
        return 0 if record.label == "non_covid" else FOUR_CLASS_NAMES.index(record.label)

    results = []
    for seed, name in enumerate(MODELS):
        probs = _scores(records, FOUR_CLASS_NAMES, truth, seed)
        scores = ModelScores(np.array([probs[r.case_id] for r in val]), probs)
        results.append(result_from_scores(name, scores, val, test_sets, "four_class"))
    written = write_comparison(results, tmp_path / "reports", SUMMARY,
                               plan=_plan(tmp_path, "four_class"), seed=0, central_epochs=1,
                               test_sets=test_sets)
    reports = tmp_path / "reports"
    assert "comparison_classes.png" in written["files"]
    assert (reports / "comparison_classes.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (reports / "comparison.md").read_text()
    assert "## Four classes on the pooled test set" in markdown
    assert "DeLong" in markdown and "task four_class" in markdown
    data = json.loads((reports / "comparison.json").read_text())
    assert data["task"] == "four_class"
    federated = data["models"]["federated"]
    # The pooled test set's four-class CTs: main-campus's 12 and the UK-style site's 3
    # COVID-19 cases (its binary-only non-COVID labels have no four-class truth).
    four = federated["four_class"]
    assert four["cases"] == 12 + 3
    assert np.array(four["confusion"]).sum() == four["cases"]
    assert set(four["per_class"]) == set(FOUR_CLASS_NAMES)
    assert four["macro_auc_ci_low"] <= four["macro_auc"] <= four["macro_auc_ci_high"]
    # The binary COVID-19 comparison is still there, from the COVID-19 column.
    assert federated["by_set"][POOLED]["n_pos"] == 6 + 3
    assert f"| federated | {four['cases']} | {four['accuracy']:.3f} |" in markdown


def test_severity_demo_report_grades_each_sets_graded_cases(tmp_path: Path) -> None:
    records = _cohort()
    test_sets = _test_sets(records)
    results = []
    for seed, name in enumerate(MODELS):
        graded = usable_records(records, "severity")
        probs = _scores(graded, SEVERITY_CLASS_NAMES, lambda r: r.severity - 1, seed)
        results.append(result_from_scores(name, ModelScores(np.zeros((0, 3)), probs), [],
                                          test_sets, "severity"))
    write_comparison(results, tmp_path / "reports", SUMMARY, plan=_plan(tmp_path, "severity"),
                     seed=0, central_epochs=1, test_sets=test_sets)
    reports = tmp_path / "reports"
    data = json.loads((reports / "comparison.json").read_text())
    federated = data["models"]["federated"]
    assert federated["threshold"] is None and data["delong_vs_federated"] == {}
    assert federated["by_set"][POOLED]["cases"] == 6 + 3
    assert federated["by_set"]["wuhan-union (hold-out)"]["cases"] == 6
    for block in federated["by_set"].values():
        assert "quadratic_kappa" in block and "macro_auc" in block
    markdown = (reports / "comparison.md").read_text()
    assert "## Grades by test set" in markdown and "kappa" in markdown
    assert (reports / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_severity_scoring_uses_the_graded_cases_of_the_tiny_cohort(tiny_cohort: Path) -> None:
    records = read_manifest(tiny_cohort)
    test_sets = {POOLED: [r for r in records if r.split == "test"],
                 "hold-out": [r for r in records if r.split == "holdout"]}
    config = preprocess_for("cpu-small")
    model = initial_model("densenet3d", "cpu-small", len(SEVERITY_CLASS_NAMES), 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = evaluate_model("initial", model, [], test_sets, config, StackCache(config),
                                samples=1, task="severity")
    finally:
        torch.set_num_threads(threads)
    assert result.threshold is None
    for name, cases in test_sets.items():
        graded = usable_records(cases, "severity")
        assert result.by_set[name]["cases"] == len(graded) > 0
        assert np.array(result.by_set[name]["confusion"]).sum() == len(graded)
