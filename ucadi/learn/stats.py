"""Statistics a clinical paper reports: DeLong AUC variance and test, bootstrap, calibration.

DeLong et al. (1988) with the fast midrank algorithm of Sun & Xu (2014): the AUC of each score
vector is the mean of its structural components; their covariance over positives and negatives
gives the AUC variance (and the covariance between two models scored on the same cases), hence
confidence intervals and the two-sided p-value of the difference between two correlated AUCs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from ucadi.errors import UcadiError

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
CALIBRATION_BINS = 10


class StatisticsError(UcadiError):
    """Data given to a statistic cannot support it (one class only, shape mismatch...)."""


@dataclass(frozen=True)
class DeLongResult:
    """AUCs of k score vectors on the same cases and their k x k DeLong covariance."""

    aucs: np.ndarray
    covariance: np.ndarray


def _binary_labels(labels: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(labels).astype(int).ravel()
    if labels.shape[0] != n:
        raise StatisticsError(f"{labels.shape[0]} labels for {n} scores")
    if not set(np.unique(labels)) <= {0, 1}:
        raise StatisticsError("binary labels must be 0 or 1")
    if labels.sum() == 0 or labels.sum() == n:
        raise StatisticsError("AUC needs at least one positive and one negative case; "
                              f"got {int(labels.sum())} positives among {n}")
    return labels


def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of values, ties sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    ranks = np.empty(len(values), dtype=float)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and ordered[end + 1] == ordered[start]:
            end += 1
        ranks[start:end + 1] = 0.5 * (start + end) + 1.0
        start = end + 1
    result = np.empty(len(values), dtype=float)
    result[order] = ranks
    return result


def delong(scores: np.ndarray, labels: np.ndarray) -> DeLongResult:
    """AUCs and DeLong covariance of score vectors `scores` (k, n) or (n,) for binary labels."""
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    labels = _binary_labels(labels, scores.shape[1])
    positives, negatives = scores[:, labels == 1], scores[:, labels == 0]
    m, n = positives.shape[1], negatives.shape[1]
    k = scores.shape[0]
    tx = np.stack([midranks(positives[r]) for r in range(k)])
    ty = np.stack([midranks(negatives[r]) for r in range(k)])
    tz = np.stack([midranks(np.concatenate([positives[r], negatives[r]])) for r in range(k)])
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v_pos = (tz[:, :m] - tx) / n
    v_neg = 1.0 - (tz[:, m:] - ty) / m
    cov_pos = np.atleast_2d(np.cov(v_pos)) if m > 1 else np.zeros((k, k))
    cov_neg = np.atleast_2d(np.cov(v_neg)) if n > 1 else np.zeros((k, k))
    return DeLongResult(aucs=aucs, covariance=cov_pos / m + cov_neg / n)


def auc_ci_delong(scores: np.ndarray, labels: np.ndarray,
                  confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(AUC, low, high): the normal-approximation DeLong interval, clipped to [0, 1]."""
    result = delong(scores, labels)
    auc = float(result.aucs[0])
    half = norm.ppf(0.5 + confidence / 2) * float(np.sqrt(max(result.covariance[0, 0], 0.0)))
    return auc, float(max(0.0, auc - half)), float(min(1.0, auc + half))


def delong_test(scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray) -> float:
    """Two-sided p-value that two models' AUCs on the same cases are equal (DeLong)."""
    result = delong(np.stack([np.ravel(scores_a), np.ravel(scores_b)]), labels)
    difference = result.aucs[0] - result.aucs[1]
    variance = result.covariance[0, 0] + result.covariance[1, 1] - 2 * result.covariance[0, 1]
    if variance <= 0:
        return 1.0 if difference == 0 else 0.0
    return float(2 * norm.sf(abs(difference) / np.sqrt(variance)))


def auc_ci_bootstrap(scores: np.ndarray, labels: np.ndarray, confidence: float = CONFIDENCE,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC, resampling positives and negatives apart."""
    scores = np.asarray(scores, dtype=float).ravel()
    labels = _binary_labels(labels, len(scores))
    rng = np.random.default_rng(seed)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    aucs = np.empty(resamples)
    for i in range(resamples):
        pos = rng.choice(positives, len(positives))
        neg = rng.choice(negatives, len(negatives))
        # Mann-Whitney form of the AUC: P(pos > neg) + 0.5 P(pos == neg).
        ranks = midranks(np.concatenate([pos, neg]))
        aucs[i] = (ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(aucs, tail)), float(np.percentile(aucs, 100 - tail))


def sensitivity_specificity(scores: np.ndarray, labels: np.ndarray,
                            threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity calling a case positive when score >= threshold."""
    scores = np.asarray(scores, dtype=float).ravel()
    labels = np.asarray(labels).astype(int).ravel()
    called = scores >= threshold
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    sensitivity = float((called & (labels == 1)).sum() / n_pos) if n_pos else float("nan")
    specificity = float((~called & (labels == 0)).sum() / n_neg) if n_neg else float("nan")
    return sensitivity, specificity


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct cut, from (0, 0) to (1, 1)."""
    scores = np.asarray(scores, dtype=float).ravel()
    labels = _binary_labels(labels, len(scores))
    order = np.argsort(-scores, kind="mergesort")
    ordered, hits = scores[order], labels[order]
    # One point per distinct score: ties enter the positive call together.
    last_of_run = np.r_[np.nonzero(np.diff(ordered))[0], len(ordered) - 1]
    tpr = np.cumsum(hits)[last_of_run] / hits.sum()
    fpr = np.cumsum(1 - hits)[last_of_run] / (len(hits) - hits.sum())
    return np.r_[0.0, fpr], np.r_[0.0, tpr]


def youden_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """Cut maximising Youden's J = sensitivity + specificity - 1.

    Candidates are midpoints between consecutive distinct scores (a cut at an observed score
    would sit on a case); among equal J the lowest cut wins, favouring sensitivity as a
    screening test should.
    """
    scores = np.asarray(scores, dtype=float).ravel()
    labels = _binary_labels(labels, len(scores))
    best_cut, best_j = -np.inf, -np.inf
    for cut in candidate_cuts(scores):
        sens, spec = sensitivity_specificity(scores, labels, float(cut))
        if sens + spec - 1 > best_j + 1e-12:
            best_cut, best_j = float(cut), sens + spec - 1
    return best_cut


def candidate_cuts(scores: np.ndarray) -> np.ndarray:
    """Every distinct way to split `scores`, ascending: just below the lowest score, the
    midpoints between consecutive distinct scores, just above the highest. No cut sits on a
    score, so tied scores always fall on the same side."""
    distinct = np.unique(np.asarray(scores, dtype=float).ravel())
    return np.concatenate([[distinct[0] - 1e-6], (distinct[1:] + distinct[:-1]) / 2,
                           [distinct[-1] + 1e-6]])


def specificity_threshold(scores: np.ndarray, labels: np.ndarray, target: float) -> float:
    """The lowest cut (candidate_cuts) at which specificity first reaches `target`: the most
    sensitive operating point whose specificity on these cases is >= target.

    A fixed rule, the same for every model (unlike Youden's J, it does not trade sensitivity
    against specificity on the validation cases). Specificity only grows with the cut, and the
    cut above the highest score has specificity 1, so a target in (0, 1] is always reached;
    ties in score move together, so the specificity reached may exceed the target (a tie
    among negatives that straddles it). Needs at least one negative and one positive case,
    as Youden's J does.
    """
    if not 0 < target <= 1:
        raise StatisticsError(f"target specificity must be in (0, 1], got {target}")
    scores = np.asarray(scores, dtype=float).ravel()
    labels = _binary_labels(labels, len(scores))
    negatives = np.sort(scores[labels == 0])
    needed = math.ceil(target * len(negatives) - 1e-9)  # negatives that must fall below
    for cut in candidate_cuts(scores):
        if np.searchsorted(negatives, cut, side="left") >= needed:
            return float(cut)
    raise AssertionError("unreachable: the highest cut has specificity 1")


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    matrix = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(matrix, (np.asarray(true, dtype=int), np.asarray(predicted, dtype=int)), 1)
    return matrix


@dataclass(frozen=True)
class Calibration:
    """Expected calibration error and the reliability curve (per non-empty bin)."""

    ece: float
    bin_confidence: list[float]
    bin_frequency: list[float]
    bin_count: list[int]


def calibration(probabilities: np.ndarray, labels: np.ndarray,
                bins: int = CALIBRATION_BINS) -> Calibration:
    """Reliability of predicted positive-class probabilities on equal-width bins."""
    probabilities = np.asarray(probabilities, dtype=float).ravel()
    labels = np.asarray(labels, dtype=float).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    confidence, frequency, count, ece = [], [], [], 0.0
    for b in range(bins):
        members = index == b
        if not members.any():
            continue
        conf, freq = float(probabilities[members].mean()), float(labels[members].mean())
        confidence.append(conf)
        frequency.append(freq)
        count.append(int(members.sum()))
        ece += members.mean() * abs(conf - freq)
    return Calibration(float(ece), confidence, frequency, count)


def quadratic_weighted_kappa(true: np.ndarray, predicted: np.ndarray,
                             num_classes: int) -> float:
    """Cohen's kappa with quadratic weights (i - j)^2 / (k - 1)^2 for ordered classes 0..k-1:
    1 - sum(W * observed) / sum(W * expected), expected from the two marginals. Agreement
    beyond chance that counts a grade I called III as worse than one called II. NaN when
    chance disagreement is zero (truth and calls all in one class)."""
    true = np.asarray(true, dtype=int).ravel()
    predicted = np.asarray(predicted, dtype=int).ravel()
    if true.shape != predicted.shape:
        raise StatisticsError(f"{true.size} true classes for {predicted.size} predictions")
    if num_classes < 2:
        raise StatisticsError(f"kappa needs at least 2 classes; got {num_classes}")
    if true.size == 0:
        return float("nan")
    if min(true.min(), predicted.min()) < 0 or max(true.max(), predicted.max()) >= num_classes:
        raise StatisticsError(f"classes must lie in 0..{num_classes - 1}")
    observed = confusion_matrix(true, predicted, num_classes).astype(float)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    grades = np.arange(num_classes)
    weights = (grades[:, None] - grades[None, :]) ** 2 / (num_classes - 1) ** 2
    chance = float((weights * expected).sum())
    if chance == 0:
        return float("nan")
    return 1.0 - float((weights * observed).sum()) / chance


def per_class_rates(matrix: np.ndarray) -> list[tuple[float, float]]:
    """(sensitivity, specificity) of each class, one-vs-rest, from a confusion matrix [true,
    predicted]; NaN where the class (or the rest) has no cases."""
    matrix = np.asarray(matrix, dtype=float)
    total = matrix.sum()
    rates = []
    for k in range(matrix.shape[0]):
        actual, called, hit = matrix[k].sum(), matrix[:, k].sum(), matrix[k, k]
        others = total - actual
        rates.append((float(hit / actual) if actual else float("nan"),
                      float((others - (called - hit)) / others) if others else float("nan")))
    return rates


def _ovr_aucs(probs: np.ndarray, true: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Mann-Whitney one-vs-rest AUC of each class in `classes` (each has cases and non-cases)
    for case rows `probs` (n, k), or for a batch of resamples (r, n, k) sharing `true`:
    shape (len(classes),) or (r, len(classes))."""
    from scipy.stats import rankdata

    aucs = []
    for k in classes:
        positive = true == k
        m = int(positive.sum())
        ranks = rankdata(probs[..., k], axis=-1)
        aucs.append((ranks[..., positive].sum(axis=-1) - m * (m + 1) / 2) / (m * (true.size - m)))
    return np.stack(aucs, axis=-1)


def macro_auc_ci(probs: np.ndarray, true: np.ndarray, confidence: float = CONFIDENCE,
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
                 ) -> tuple[float, float, float, list[int]]:
    """(macro one-vs-rest AUC, low, high, classes averaged): the mean over the classes present
    in `true` (each against all others, scored by its own probability column) with a
    percentile bootstrap interval that resamples cases within each true class, so every
    resample keeps the class counts (resamples=0: no interval, NaN). Needs at least two
    classes present."""
    probs = np.asarray(probs, dtype=float)
    true = np.asarray(true, dtype=int).ravel()
    if probs.ndim != 2 or probs.shape[0] != true.size:
        raise StatisticsError(f"probabilities of shape {probs.shape} for {true.size} cases")
    classes = np.unique(true)
    if len(classes) < 2:
        raise StatisticsError("a macro AUC needs cases of at least two classes; got "
                              f"{len(classes)}")
    auc = float(_ovr_aucs(probs, true, classes).mean())
    if resamples < 1:
        return auc, float("nan"), float("nan"), [int(k) for k in classes]
    rng = np.random.default_rng(seed)
    # Each resample draws every class's cases from that class, so all share one truth vector.
    members = [np.flatnonzero(true == k) for k in classes]
    rows = np.concatenate([rng.choice(group, (resamples, len(group))) for group in members],
                          axis=1)
    values = _ovr_aucs(probs[rows], true[np.concatenate(members)], classes).mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return (auc, float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)),
            [int(k) for k in classes])
