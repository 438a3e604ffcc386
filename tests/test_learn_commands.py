"""`ucadi train`, `ucadi evaluate` and `ucadi explain` end to end on the tiny cohort."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ucadi.cli import main
from ucadi.ct.synth import generate_cohort, read_manifest

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    manifest = generate_cohort(tmp_path_factory.mktemp("tiny"), "tiny", seed=11, workers=2,
                               show_progress=False)
    return manifest.parent


@pytest.fixture(scope="module")
def model_dir(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    code = main(["train", "--data", str(cohort), "--site", "main-campus", "--epochs", "2",
                 "--batch-size", "4", "--no-progress", "--threads", "1", "--out", str(out)])
    assert code == 0
    return out


def test_train_command_writes_a_card_describing_data_recipe_and_threshold(model_dir):
    card = json.loads((model_dir / "card.json").read_text())
    assert card["arch"] == "densenet3d" and card["preset"] == "cpu-small"
    assert card["class_names"] == ["non_covid", "covid"]
    assert card["training"]["train"]["sites"] == {"main-campus": card["training"]["train"]["cases"]}
    assert card["training"]["recipe"]["total_epochs"] == 2
    assert len(card["training"]["history"]) == 2
    assert 0.0 <= card["metrics"]["threshold"] <= 1.0
    assert card["preprocess"]["size"] == [32, 32]


def test_evaluate_command_writes_metrics_markdown_and_plots(cohort, model_dir, tmp_path):
    readers = tmp_path / "readers.csv"
    readers.write_text("reader,sensitivity,specificity\nR1,0.79,0.90\nR2,0.9,0.956\n")
    out = tmp_path / "report"
    code = main(["evaluate", "--model", str(model_dir), "--data", str(cohort), "--samples", "2",
                 "--readers", str(readers), "--compare", str(model_dir), "--bootstrap", "50",
                 "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    ct = metrics["ct_level"]
    assert ct["n_pos"] + ct["n_neg"] == metrics["cases"]
    assert ct["auc_ci_low"] <= ct["auc"] <= ct["auc_ci_high"]
    assert "auc_bootstrap_ci_low" in ct and "ece" in metrics["calibration"]
    assert metrics["comparison"]["delong_p"] == 1.0  # a model against itself
    assert metrics["patient_level"]["patients"] <= metrics["cases"]
    assert "| CT |" in (out / "report.md").read_text()
    for png in ("roc.png", "confusion.png", "reliability.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_evaluate_on_covid_only_holdout_reports_sensitivity_without_auc(cohort, model_dir,
                                                                         tmp_path):
    out = tmp_path / "holdout"
    assert main(["evaluate", "--model", str(model_dir), "--data", str(cohort), "--split",
                 "holdout", "--samples", "1", "--out", str(out)]) == 0
    ct = json.loads((out / "metrics.json").read_text())["ct_level"]
    assert ct["n_neg"] == 0 and 0.0 <= ct["sensitivity"] <= 1.0 and np.isnan(ct["auc"])


def test_explain_command_writes_heatmaps_aligned_to_input_and_original_slices(cohort, model_dir,
                                                                              tmp_path):
    case = next(r for r in read_manifest(cohort / "manifest.csv") if r.label == "covid")
    out = tmp_path / "explain"
    assert main(["explain", str(case.series_dir), "--model", str(model_dir), "--target",
                 "covid", "--out", str(out)]) == 0
    heatmap = np.load(out / "heatmap.npy")
    original = np.load(out / "heatmap_original.npy")
    info = json.loads((out / "explanation.json").read_text())
    assert heatmap.shape == (16, 32, 32) and 0 <= heatmap.min() and heatmap.max() <= 1
    assert original.shape[0] == case.slices == info["num_slices"]
    assert original.dtype == np.uint8 and original.shape[1:] == np.load(case.mask_file).shape[1:]
    # At a sampled slice the original-grid heatmap is the input heatmap, upsampled.
    index = info["slice_indices"][5]
    assert original[index].max() == pytest.approx(255 * heatmap[5].max(), abs=3)
    assert (out / "montage.png").read_bytes()[:4] == b"\x89PNG"


def test_cross_validation_keeps_the_best_fold_and_reports_every_fold(cohort, tmp_path):
    out = tmp_path / "cv"
    assert main(["train", "--data", str(cohort), "--site", "main-campus", "--epochs", "1",
                 "--batch-size", "4", "--cv", "2", "--no-progress", "--threads", "1",
                 "--out", str(out)]) == 0
    cv = json.loads((out / "card.json").read_text())["metrics"]["cross_validation"]
    assert cv["folds"] == 2 and len(cv["val_auc_per_fold"]) == 2
    assert cv["chosen_fold"] in (0, 1)
    assert (out / "folds" / "fold-0" / "card.json").is_file()


def test_bad_inputs_exit_1_and_usage_errors_2_with_one_line(cohort, model_dir, tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(cohort),
                 "--out", str(tmp_path / "r")]) == 1
    assert "card.json" in capsys.readouterr().err
    assert main(["train", "--data", str(cohort), "--site", "atlantis", "--epochs", "1",
                 "--out", str(tmp_path / "m")]) == 1
    assert "atlantis" in capsys.readouterr().err
    assert main(["explain", str(cohort), "--model", str(model_dir), "--target", "flu",
                 "--out", str(tmp_path / "e")]) == 2
