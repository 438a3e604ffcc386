"""DeLong AUC variance, CI and p-value against an independent brute-force computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve

from ucadi.learn.evaluate import choose_threshold, evaluate_binary
from ucadi.learn.stats import (
    StatisticsError,
    auc_ci_bootstrap,
    auc_ci_delong,
    calibration,
    confusion_matrix,
    delong,
    delong_test,
    midranks,
    roc_points,
)


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def _brute_force(scores: np.ndarray, labels: np.ndarray):
    """DeLong (1988) structural components written out with explicit loops."""
    k = scores.shape[0]
    pos, neg = scores[:, labels == 1], scores[:, labels == 0]
    m, n = pos.shape[1], neg.shape[1]
    v10 = np.array([[np.mean([_psi(pos[r, i], neg[r, j]) for j in range(n)]) for i in range(m)]
                    for r in range(k)])
    v01 = np.array([[np.mean([_psi(pos[r, i], neg[r, j]) for i in range(m)]) for j in range(n)]
                    for r in range(k)])
    aucs = v10.mean(axis=1)
    s10 = np.array([[np.sum((v10[a] - aucs[a]) * (v10[b] - aucs[b])) / (m - 1)
                     for b in range(k)] for a in range(k)])
    s01 = np.array([[np.sum((v01[a] - aucs[a]) * (v01[b] - aucs[b])) / (n - 1)
                     for b in range(k)] for a in range(k)])
    return aucs, s10 / m + s01 / n


@pytest.fixture
def two_models():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 60)
    labels[:2] = [0, 1]
    # Rounded scores create ties, which the midrank formula must handle like psi = 0.5.
    a = np.round(labels * 1.0 + rng.normal(size=60), 1)
    b = np.round(labels * 0.6 + 0.5 * a + rng.normal(size=60), 1)
    return np.stack([a, b]), labels


def test_delong_aucs_and_covariance_equal_the_brute_force_structural_components(two_models):
    scores, labels = two_models
    expected_aucs, expected_cov = _brute_force(scores, labels)
    result = delong(scores, labels)
    np.testing.assert_allclose(result.aucs, expected_aucs, rtol=1e-12)
    np.testing.assert_allclose(result.covariance, expected_cov, rtol=1e-10)
    for r in range(2):
        assert result.aucs[r] == pytest.approx(roc_auc_score(labels, scores[r]), abs=1e-12)


def test_delong_p_value_equals_the_brute_force_z_test(two_models):
    scores, labels = two_models
    aucs, cov = _brute_force(scores, labels)
    z = (aucs[0] - aucs[1]) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert delong_test(scores[0], scores[1], labels) == pytest.approx(2 * norm.sf(abs(z)),
                                                                      rel=1e-9)
    assert delong_test(scores[0], scores[0], labels) == 1.0


def test_delong_ci_is_the_normal_interval_around_the_auc(two_models):
    scores, labels = two_models
    aucs, cov = _brute_force(scores, labels)
    auc, low, high = auc_ci_delong(scores[0], labels)
    half = 1.959963984540054 * np.sqrt(cov[0, 0])
    assert (auc, low, high) == pytest.approx((aucs[0], aucs[0] - half, aucs[0] + half))


def test_bootstrap_ci_agrees_with_delong_on_a_larger_sample():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    scores = labels + rng.normal(size=400)
    _, low, high = auc_ci_delong(scores, labels)
    b_low, b_high = auc_ci_bootstrap(scores, labels, resamples=800, seed=0)
    assert abs(b_low - low) < 0.02 and abs(b_high - high) < 0.02


def test_roc_points_match_scikit_learn_and_integrate_to_the_auc(two_models):
    scores, labels = two_models
    fpr, tpr = roc_points(scores[0], labels)
    expected_fpr, expected_tpr, _ = roc_curve(labels, scores[0], drop_intermediate=False)
    np.testing.assert_allclose(fpr, expected_fpr)
    np.testing.assert_allclose(tpr, expected_tpr)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(labels, scores[0]))


def test_midranks_share_ranks_among_ties():
    np.testing.assert_array_equal(midranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1, 3.5, 2])


def test_auc_of_a_one_class_set_is_refused_with_the_counts():
    with pytest.raises(StatisticsError, match="positive and one negative"):
        delong(np.array([0.1, 0.9]), np.array([1, 1]))


def test_threshold_chosen_on_validation_separates_separable_scores():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.35, 0.4, 0.8, 0.9])
    threshold = choose_threshold(scores, labels)
    assert 0.35 < threshold < 0.4
    result = evaluate_binary(scores, labels, threshold)
    assert (result["sensitivity"], result["specificity"], result["auc"]) == (1.0, 1.0, 1.0)
    assert (result["n_pos"], result["n_neg"]) == (3, 3)


def test_calibration_error_is_zero_when_frequencies_match_and_large_when_overconfident():
    labels = np.array([1, 0, 0, 0] * 25 + [1, 1, 1, 0] * 25)
    matched = np.array([0.25] * 100 + [0.75] * 100)
    assert calibration(matched, labels).ece == pytest.approx(0.0)
    overconfident = np.where(matched > 0.5, 0.99, 0.01)
    assert calibration(overconfident, labels).ece > 0.2


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    matrix = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
