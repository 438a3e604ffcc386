"""`ucadi experiment contrast-augment`: its matched-specificity sensitivity, its test set and
its report (the arms themselves run the production training and simulation code)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ucadi.experiments.contrast import (
    _pair,
    noncontrast_test,
    sensitivity_at_specificity,
    write_contrast_report,
)


def test_sensitivity_at_specificity_uses_the_lowest_cut_reaching_it() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.25, 0.5, 0.8, 0.95])
    assert sensitivity_at_specificity(scores, labels, 0.75) == 0.75  # cut 0.3
    assert sensitivity_at_specificity(scores, labels, 0.5) == 1.0  # cut 0.2
    assert sensitivity_at_specificity(scores, labels, 1.0) == 0.25  # cut 0.9
    assert np.isnan(sensitivity_at_specificity(scores[:4], labels[:4], 0.5))


def test_noncontrast_test_keeps_the_training_sites_test_cts_without_contrast() -> None:
    def case(site: str, split: str, contrast: int) -> SimpleNamespace:
        return SimpleNamespace(site=site, split=split, contrast=contrast)
    records = [case("a", "test", 0), case("a", "test", 1), case("a", "val", 0),
               case("b", "test", 0), case("holdout", "holdout", 0)]
    assert noncontrast_test(records, ("a", "b")) == [records[0], records[3]]


def run(arm: str, seed: int, scores: list[float], auc: float) -> dict:
    return {"arm": arm, "seed": seed, "scores": scores, "labels": [0, 0, 0, 1, 1, 1],
            "threshold": 0.5, "test_cases": 6,
            "test_covid": 3, "metrics": {"auc": auc, "auc_ci_low": auc - 0.1,
                                         "auc_ci_high": min(1.0, auc + 0.1), "sensitivity": 0.6,
                                         "specificity": 2 / 3, "seconds": 10.0}}


def test_report_pairs_each_augmented_arm_with_its_baseline(tmp_path: Path) -> None:
    runs = []
    for seed in (0, 1):
        seed_runs = [run("local", seed, [0.1, 0.4, 0.6, 0.35, 0.7, 0.9], 7 / 9),
                     run("local + CycleGAN", seed, [0.1, 0.2, 0.6, 0.5, 0.7, 0.9], 8 / 9)]
        _pair(seed_runs)
        runs += seed_runs
    paired = runs[1]["paired"]
    assert paired["auc_difference"] == pytest.approx(1 / 9)
    assert paired["sensitivity_without"] == pytest.approx(2 / 3)
    assert paired["sensitivity_with"] == 1.0
    assert 0 < paired["delong_p"] <= 1 and "paired" not in runs[0]
    settings = {"cohort": "small", "preset": "cpu-small", "budget": 12, "lr": 0.05,
                "batch_size": 8, "cyclegan_preset": "cpu-small", "cyclegan_epochs": None,
                "contrast_site": "nccid-uk", "probability": 0.5}
    files = write_contrast_report(tmp_path, runs, settings)
    text = files[0].read_text()
    assert "| local + CycleGAN vs local | +0.111 ± 0.000" in text
    assert "0.667 -> 1.000" in text
    assert "--seeds 0 1 --budget 12 --cyclegan-preset cpu-small --arms 'local' " \
        "'local + CycleGAN'`" in text
    assert files[1].stat().st_size > 10_000
    summary = json.loads(files[2].read_text())["summary"]
    assert summary["local"]["auc"]["values"] == [7 / 9, 7 / 9]


def test_the_study_needs_the_plaintext_simulation() -> None:
    from ucadi.cli import main

    with pytest.raises(SystemExit, match="plaintext simulation only"):
        main(["experiment", "contrast-augment", "--seeds", "0"])


def test_arms_are_scored_on_the_covid_class_of_the_models_class_rows() -> None:
    """score_model answers one row of class probabilities per CT: the study must threshold
    and compare the COVID-19 column, not the flattened rows."""

    from ucadi.demo.compare import ModelScores
    from ucadi.experiments.contrast import covid_scores
    from ucadi.learn import COVID_CLASS

    def rows(covid: list[float]) -> np.ndarray:
        out = np.zeros((len(covid), 2))
        out[:, COVID_CLASS] = covid
        out[:, 1 - COVID_CLASS] = 1 - np.asarray(covid)
        return out

    val = [SimpleNamespace(binary_label=label) for label in (0, 0, 1, 1)]
    test = [SimpleNamespace(case_id=f"t{i}") for i in range(3)]
    scores = ModelScores(rows([0.1, 0.3, 0.7, 0.9]),
                         {f"t{i}": row for i, row in enumerate(rows([0.2, 0.6, 0.95]))})
    threshold, test_scores = covid_scores(scores, val, test)
    assert 0.3 < threshold <= 0.7
    assert test_scores.tolist() == [0.2, 0.6, 0.95]
