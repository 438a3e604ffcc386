"""Clinical evaluation: threshold on validation data, then CT-, patient- and site-level results.

Scores are the averaged COVID-19 probabilities (class index 1 in both tasks). A CT is called
COVID-19 when its probability is >= the threshold chosen on validation data (Youden's J), so the
test set never tunes the operating point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ucadi.learn.data import task_label
from ucadi.learn.recipe import COVID_CLASS, FOUR_CLASS_NAMES
from ucadi.learn.stats import (
    StatisticsError,
    auc_ci_bootstrap,
    auc_ci_delong,
    calibration,
    confusion_matrix,
    delong_test,
    sensitivity_specificity,
    youden_threshold,
)


def choose_threshold(probs_covid: np.ndarray, labels: np.ndarray) -> float:
    """Operating point from validation data: the cut maximising Youden's J (see stats)."""
    return youden_threshold(probs_covid, labels)


def evaluate_binary(probs_covid: np.ndarray, labels: np.ndarray, threshold: float,
                    bootstrap: int = 0, seed: int = 0) -> dict[str, float]:
    """Sensitivity, specificity, accuracy and AUC with its 95 % DeLong CI at `threshold`."""
    probs_covid = np.asarray(probs_covid, dtype=float).ravel()
    labels = np.asarray(labels).astype(int).ravel()
    sensitivity, specificity = sensitivity_specificity(probs_covid, labels, threshold)
    called = probs_covid >= threshold
    result: dict[str, float] = {
        "threshold": float(threshold), "n_pos": int(labels.sum()),
        "n_neg": int((labels == 0).sum()), "sensitivity": sensitivity,
        "specificity": specificity, "accuracy": float((called == (labels == 1)).mean()),
    }
    if 0 < labels.sum() < len(labels):
        auc, low, high = auc_ci_delong(probs_covid, labels)
        result.update(auc=auc, auc_ci_low=low, auc_ci_high=high)
        if bootstrap:
            low, high = auc_ci_bootstrap(probs_covid, labels, resamples=bootstrap, seed=seed)
            result.update(auc_bootstrap_ci_low=low, auc_bootstrap_ci_high=high)
    else:
        # A one-class set (e.g. the COVID-only hold-out sites) has no AUC, only sensitivity.
        result.update(auc=float("nan"), auc_ci_low=float("nan"), auc_ci_high=float("nan"))
    return result


def patient_level(probs: np.ndarray, records: Sequence[Any]) -> tuple[np.ndarray, np.ndarray,
                                                                        list[str]]:
    """Mean probabilities and binary label per patient (a patient may have several CTs)."""
    patients = sorted({r.patient_id for r in records})
    index = {p: i for i, p in enumerate(patients)}
    sums = np.zeros((len(patients), probs.shape[1]))
    counts = np.zeros(len(patients))
    labels = np.zeros(len(patients), dtype=int)
    for row, record in zip(probs, records, strict=True):
        i = index[record.patient_id]
        sums[i] += row
        counts[i] += 1
        labels[i] = max(labels[i], int(record.binary_label))
    return sums / counts[:, None], labels, patients


def clinical_report(probs: np.ndarray, records: Sequence[Any], class_names: Sequence[str],
                    threshold: float, *, bootstrap: int = 0,
                    compare_probs: np.ndarray | None = None) -> dict[str, Any]:
    """Everything `ucadi evaluate` reports, as a JSON-ready dictionary."""
    probs = np.asarray(probs, dtype=float)
    binary = np.array([int(r.binary_label) for r in records])
    covid = probs[:, COVID_CLASS]
    report: dict[str, Any] = {"class_names": list(class_names), "cases": len(records)}
    report["ct_level"] = evaluate_binary(covid, binary, threshold, bootstrap=bootstrap)
    report["ct_level"]["confusion_2class"] = confusion_matrix(
        binary, (covid >= threshold).astype(int), 2).tolist()
    if 0 < binary.sum() < len(binary):
        cal = calibration(covid, binary)
        report["calibration"] = {"ece": cal.ece, "bin_confidence": cal.bin_confidence,
                                 "bin_frequency": cal.bin_frequency, "bin_count": cal.bin_count}
    patient_probs, patient_labels, patients = patient_level(probs, records)
    report["patient_level"] = evaluate_binary(patient_probs[:, COVID_CLASS], patient_labels,
                                              threshold)
    report["patient_level"]["patients"] = len(patients)
    if len(class_names) == len(FOUR_CLASS_NAMES):
        report["four_class"] = _four_class(probs, records)
    report["per_site"] = {
        site: evaluate_binary(covid[mask], binary[mask], threshold)
        for site in sorted({r.site for r in records})
        for mask in [np.array([r.site == site for r in records])]}
    if compare_probs is not None:
        report["comparison"] = compare_models(covid, np.asarray(compare_probs)[:, COVID_CLASS],
                                              binary)
    return report


def compare_models(scores_a: np.ndarray, scores_b: np.ndarray,
                   labels: np.ndarray) -> dict[str, float]:
    """AUCs of two models on the same CTs and the DeLong p-value of their difference."""
    auc_a, _, _ = auc_ci_delong(scores_a, labels)
    auc_b, _, _ = auc_ci_delong(scores_b, labels)
    return {"auc": auc_a, "auc_other": auc_b, "delong_p": delong_test(scores_a, scores_b, labels)}


def _four_class(probs: np.ndarray, records: Sequence[Any]) -> dict[str, Any]:
    labelled = [(i, task_label(r, "four_class")) for i, r in enumerate(records)]
    rows = np.array([i for i, label in labelled if label is not None], dtype=int)
    truth = np.array([label for _, label in labelled if label is not None], dtype=int)
    result: dict[str, Any] = {"cases": len(rows)}
    if len(rows) == 0:
        return result
    predicted = probs[rows].argmax(axis=1)
    result["confusion_4class"] = confusion_matrix(truth, predicted, len(FOUR_CLASS_NAMES)).tolist()
    result["accuracy"] = float((predicted == truth).mean())
    one_vs_rest: dict[str, dict[str, float]] = {}
    for k, name in enumerate(FOUR_CLASS_NAMES):
        try:
            auc, low, high = auc_ci_delong(probs[rows, k], (truth == k).astype(int))
        except StatisticsError:
            continue
        one_vs_rest[name] = {"auc": auc, "auc_ci_low": low, "auc_ci_high": high}
    result["one_vs_rest_auc"] = one_vs_rest
    return result


def validation_at_threshold(probs_covid: np.ndarray, labels: np.ndarray,
                            threshold: float) -> dict[str, float]:
    """AUC (NaN with one class only), sensitivity and specificity at a fixed threshold: what
    a site reports of each global version on its own validation studies."""
    labels = np.asarray(labels).astype(int).ravel()
    result = {"auc": float("nan")}
    if 0 < labels.sum() < labels.size:
        result["auc"] = float(auc_ci_delong(probs_covid, labels)[0])
    sensitivity, specificity = sensitivity_specificity(probs_covid, labels, threshold)
    result["sensitivity"], result["specificity"] = float(sensitivity), float(specificity)
    return result
