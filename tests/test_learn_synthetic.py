"""Learning for real: cpu-small trained on one synthetic cohort, judged on another.

Training uses every non-hold-out case of the tiny cohort drawn with seed 0; the operating point
is chosen on the validation split of a second tiny cohort (seed 1) by Youden's J, and the model is
judged on the rest of that second cohort (its train/test splits and the COVID-only hold-out
hospitals), which training never saw. The run is deterministic (fixed seeds, one CPU thread).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from ucadi.ct.synth import generate_cohort, read_manifest
from ucadi.learn import COVID_CLASS, TrainingRecipe, evaluate_binary, predict_probabilities
from ucadi.learn.explain import explain_study, lesion_mask_on_input, pointing_game
from ucadi.learn.workflow import preprocess_for, train_model

torch.set_num_threads(1)

# 14 epochs of 52 studies at batch 8 (~90 steps): a higher peak lr than the paper's 0.01 makes
# up for the ~10x fewer steps than a 100-epoch run on a real cohort. 0.05, the demo's and the
# studies' lr: at 0.1 the run is at the mercy of the CPU's floating-point order (on one AMD EPYC
# it reached AUC 0.7 with Grad-CAM peaks outside every lesion; at 0.05 the peaks hit 12 of 22
# lesions there, 13x chance).
RECIPE = TrainingRecipe(lr=0.05, batch_size=8, warmup_epochs=1, total_epochs=14,
                        weight_decay=1e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    first = read_manifest(generate_cohort(tmp_path_factory.mktemp("cohort0"), "tiny", seed=0,
                                          workers=2, show_progress=False))
    second = read_manifest(generate_cohort(tmp_path_factory.mktemp("cohort1"), "tiny", seed=1,
                                           workers=2, show_progress=False))
    train = [r for r in first if r.split != "holdout"]
    val = [r for r in second if r.split == "val"]
    test = [r for r in second if r.split != "val"]
    model, card = train_model(train, val, arch="densenet3d", preset="cpu-small", recipe=RECIPE,
                              out_dir=tmp_path_factory.mktemp("model"), seed=0, progress=False)
    return model, card, test


@pytest.mark.slow
def test_cpu_small_separates_covid_from_non_covid_on_unseen_synthetic_cases(trained):
    model, card, test = trained
    probs = predict_probabilities(model, test, preprocess_for("cpu-small"), samples=5)
    labels = np.array([r.binary_label for r in test])
    assert 15 < labels.sum() < len(labels)
    # The threshold comes from the separate validation cases (Youden's J), never from test.
    assert card.metrics["threshold_rule"].startswith("Youden")
    result = evaluate_binary(probs[:, COVID_CLASS], labels, card.metrics["threshold"])
    assert result["auc"] >= 0.70
    # Significantly better than chance: the 95 % DeLong interval excludes 0.5.
    assert result["auc_ci_low"] > 0.5
    # Better than any constant answer at the validation-chosen operating point.
    assert result["sensitivity"] + result["specificity"] > 1.2


@pytest.mark.slow
def test_grad_cam_peaks_fall_in_the_lesions_far_more_often_than_chance(trained):
    model, _, test = trained
    config = preprocess_for("cpu-small")
    hits, chances = [], []
    for record in (r for r in test if r.binary_label == 1):
        explanation = explain_study(model, record.series_dir, config, target_class=COVID_CLASS)
        lesion = lesion_mask_on_input(np.load(record.mask_file), explanation.slice_indices,
                                      config)
        hit, chance = pointing_game(explanation.heatmap, lesion)
        hits.append(hit)
        chances.append(chance)
    chance_rate = float(np.mean(chances))
    # Pointing game against the lesion-fraction baseline: a random voxel is a lesion voxel
    # with probability `chance_rate`; the heatmap's peak must beat that by far, significantly.
    assert np.mean(hits) > 3 * chance_rate
    assert binomtest(int(np.sum(hits)), len(hits), chance_rate,
                     alternative="greater").pvalue < 1e-2
