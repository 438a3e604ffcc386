"""Clinical evaluation: threshold on validation data, then CT-, patient- and site-level results.

Binary and four-class models: scores are the averaged COVID-19 probabilities (class index 1 in
both tasks). A CT is called COVID-19 when its probability is >= the threshold chosen on
validation data (Youden's J, or a fixed target specificity: OperatingPoint), so the test set
never tunes the operating point. Four-class models add the papers' four-class outputs
(confusion matrix, per-class sensitivity and specificity, one-vs-rest and macro AUC).

Severity models (grades I/II/III of COVID-19 cases) have no COVID-19 class: a CT's grade is its
most probable one, evaluated on the graded COVID-19 cases only (confusion matrix, per-grade
sensitivity and specificity, macro AUC, quadratic-weighted kappa).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ucadi.learn.data import task_label
from ucadi.learn.recipe import COVID_CLASS, FOUR_CLASS_NAMES, TASK_CLASS_NAMES
from ucadi.learn.stats import (
    BOOTSTRAP_RESAMPLES,
    StatisticsError,
    auc_ci_bootstrap,
    auc_ci_delong,
    calibration,
    confusion_matrix,
    delong_test,
    macro_auc_ci,
    per_class_rates,
    quadratic_weighted_kappa,
    sensitivity_specificity,
    specificity_threshold,
    youden_threshold,
)

# Tasks whose classes are ordered grades: their report adds the quadratic-weighted kappa.
ORDINAL_TASKS = ("severity",)


@dataclass(frozen=True)
class OperatingPoint:
    """How a threshold is chosen on validation data: `youden` (the cut maximising Youden's J)
    or `specificity` (the lowest cut whose validation specificity reaches `target`)."""

    rule: str = "youden"
    target: float = 0.0

    @classmethod
    def parse(cls, text: str) -> OperatingPoint:
        """`youden` or `specificity:T` with T in (0, 1], e.g. `specificity:0.90`."""
        accepted = "accepted: 'youden' or 'specificity:T' with 0 < T <= 1, e.g. specificity:0.90"
        if text.strip() == "youden":
            return cls()
        rule, _, value = text.strip().partition(":")
        if rule != "specificity" or not value:
            raise StatisticsError(f"unknown operating point {text!r}; {accepted}")
        try:
            target = float(value)
        except ValueError:
            raise StatisticsError(f"operating point {text!r}: {value!r} is not a number; "
                                  f"{accepted}") from None
        if not 0 < target <= 1:
            raise StatisticsError(f"operating point {text!r}: target specificity {target} is "
                                  f"outside (0, 1]; {accepted}")
        return cls("specificity", target)

    def __str__(self) -> str:
        return "youden" if self.rule == "youden" else f"specificity:{self.target:g}"

    def describe(self) -> str:
        """For reports."""
        if self.rule == "youden":
            return "Youden's J on validation"
        return f"validation specificity >= {self.target:g} (lowest such cut)"


YOUDEN = OperatingPoint()


def choose_threshold(probs_covid: np.ndarray, labels: np.ndarray,
                     operating_point: OperatingPoint = YOUDEN) -> float:
    """Operating point from validation data: by default the cut maximising Youden's J, or the
    lowest cut whose specificity reaches a target (see stats)."""
    if operating_point.rule == "specificity":
        return specificity_threshold(probs_covid, labels, operating_point.target)
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


def task_of_classes(class_names: Sequence[str]) -> str:
    """The task whose outputs are `class_names` (a model card's class list)."""
    for task, names in TASK_CLASS_NAMES.items():
        if tuple(class_names) == names:
            return task
    raise StatisticsError(f"classes {list(class_names)} are not those of a known task "
                          f"({', '.join(f'{t}: {list(n)}' for t, n in TASK_CLASS_NAMES.items())})")


def card_task(card: Any) -> str:
    """The task of a model card: its `task` field, else (older cards) its recipe's, else the
    task its class names are; StatisticsError when they disagree or match none."""
    task = card.task or card.training.get("recipe", {}).get("task", "")
    if task and task not in TASK_CLASS_NAMES:
        raise StatisticsError(f"the model card's task {task!r} is unknown; this version knows "
                              f"{list(TASK_CLASS_NAMES)}")
    if task and tuple(card.class_names) != TASK_CLASS_NAMES.get(task):
        raise StatisticsError(f"the model card says task {task!r} but lists classes "
                              f"{list(card.class_names)}")
    return task or task_of_classes(card.class_names)


def multiclass_report(probs: np.ndarray, truth: np.ndarray, class_names: Sequence[str], *,
                      ordinal: bool = False, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0) -> dict[str, Any]:
    """Most-probable-class calls against `truth`: confusion matrix [true, predicted],
    accuracy, per-class n / sensitivity / specificity / one-vs-rest AUC with its DeLong CI,
    the macro (mean one-vs-rest) AUC over the classes present with a stratified bootstrap CI,
    and for ordered classes the quadratic-weighted kappa."""
    probs = np.asarray(probs, dtype=float)
    truth = np.asarray(truth, dtype=int).ravel()
    k = len(class_names)
    result: dict[str, Any] = {"cases": int(truth.size), "class_names": list(class_names)}
    if truth.size == 0:
        return result
    predicted = probs.argmax(axis=1)
    matrix = confusion_matrix(truth, predicted, k)
    result["confusion"] = matrix.tolist()
    result["accuracy"] = float((predicted == truth).mean())
    per_class: dict[str, dict[str, float]] = {}
    for index, (name, (sens, spec)) in enumerate(zip(class_names, per_class_rates(matrix),
                                                     strict=True)):
        values = {"n": int((truth == index).sum()), "sensitivity": sens, "specificity": spec,
                  "auc": float("nan"), "auc_ci_low": float("nan"), "auc_ci_high": float("nan")}
        try:
            auc, low, high = auc_ci_delong(probs[:, index], (truth == index).astype(int))
            values.update(auc=auc, auc_ci_low=low, auc_ci_high=high)
        except StatisticsError:
            pass  # the class (or every other) is absent: no AUC
        per_class[name] = values
    result["per_class"] = per_class
    try:
        auc, low, high, present = macro_auc_ci(probs, truth, resamples=resamples, seed=seed)
        result.update(macro_auc=auc, macro_auc_ci_low=low, macro_auc_ci_high=high,
                      macro_auc_classes=[class_names[c] for c in present])
    except StatisticsError:
        result.update(macro_auc=float("nan"), macro_auc_ci_low=float("nan"),
                      macro_auc_ci_high=float("nan"), macro_auc_classes=[])
    if ordinal:
        result["quadratic_kappa"] = quadratic_weighted_kappa(truth, predicted, k)
    return result


def task_truth(records: Sequence[Any], task: str) -> tuple[np.ndarray, np.ndarray]:
    """(row indices of the records `task` can use, their class indices)."""
    labelled = [(i, task_label(r, task)) for i, r in enumerate(records)]
    rows = np.array([i for i, label in labelled if label is not None], dtype=int)
    truth = np.array([label for _, label in labelled if label is not None], dtype=int)
    return rows, truth


def severity_report(probs: np.ndarray, records: Sequence[Any], class_names: Sequence[str], *,
                    bootstrap: int = 0) -> dict[str, Any]:
    """`ucadi evaluate` for a severity model: graded COVID-19 CTs only, overall and per site."""
    probs = np.asarray(probs, dtype=float)
    rows, truth = task_truth(records, "severity")
    resamples = bootstrap or BOOTSTRAP_RESAMPLES
    report: dict[str, Any] = {
        "task": "severity", "class_names": list(class_names), "cases": int(len(rows)),
        "excluded_cases": len(records) - int(len(rows)),
        "severity": multiclass_report(probs[rows], truth, class_names, ordinal=True,
                                      resamples=resamples)}
    sites = [records[i].site for i in rows]
    report["per_site"] = {
        site: multiclass_report(probs[rows][mask], truth[mask], class_names, ordinal=True,
                                resamples=resamples)
        for site in sorted(set(sites)) for mask in [np.array([s == site for s in sites])]}
    return report


def clinical_report(probs: np.ndarray, records: Sequence[Any], class_names: Sequence[str],
                    threshold: float, *, bootstrap: int = 0,
                    compare_probs: np.ndarray | None = None) -> dict[str, Any]:
    """Everything `ucadi evaluate` reports for a binary or four-class model (the task follows
    from the class names), as a JSON-ready dictionary."""
    probs = np.asarray(probs, dtype=float)
    task = task_of_classes(class_names)
    if task not in ("binary", "four_class"):
        raise StatisticsError(f"clinical_report is for COVID-19 models; a {task} model is "
                              "evaluated by severity_report")
    binary = np.array([int(r.binary_label) for r in records])
    covid = probs[:, COVID_CLASS]
    report: dict[str, Any] = {"task": task, "class_names": list(class_names),
                              "cases": len(records)}
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
    if task == "four_class":
        rows, truth = task_truth(records, "four_class")
        report["four_class"] = multiclass_report(probs[rows], truth, FOUR_CLASS_NAMES,
                                                 resamples=bootstrap or BOOTSTRAP_RESAMPLES)
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


def validation_auc(probs: np.ndarray, labels: np.ndarray, task: str) -> float:
    """The AUC a run is judged by on validation data (per epoch, across folds): COVID-19 vs
    the rest for the COVID-19 tasks (`labels` the task's class indices), the macro
    one-vs-rest AUC over the grades for severity; NaN where the data cannot give one."""
    labels = np.asarray(labels, dtype=int).ravel()
    try:
        if task in ORDINAL_TASKS:
            return macro_auc_ci(probs, labels, resamples=0)[0]
        return auc_ci_delong(np.asarray(probs)[:, COVID_CLASS],
                             (labels == COVID_CLASS).astype(int))[0]
    except StatisticsError:
        return float("nan")


def site_validation(probs: np.ndarray, labels: np.ndarray, task: str,
                    threshold: float) -> dict[str, float]:
    """What a federated site reports of each global version on its own validation studies
    (auc, sensitivity, specificity; SiteMetrics). COVID-19 tasks: `labels` binary, the
    COVID-19 probability at `threshold` (validation_at_threshold). Severity: `labels` grade
    indices; the macro AUC and the mean over the grades present of each grade's
    sensitivity and specificity (most probable grade called)."""
    probs = np.asarray(probs, dtype=float)
    if task not in ORDINAL_TASKS:
        return validation_at_threshold(probs[:, COVID_CLASS], labels, threshold)
    labels = np.asarray(labels, dtype=int).ravel()
    rates = per_class_rates(confusion_matrix(labels, probs.argmax(axis=1), probs.shape[1]))
    present = [rates[k] for k in np.unique(labels)]
    return {"auc": validation_auc(probs, labels, task),
            "sensitivity": float(np.nanmean([s for s, _ in present])) if present
            else float("nan"),
            "specificity": float(np.nanmean([s for _, s in present]))
            if present and not all(np.isnan(s) for _, s in present) else float("nan")}


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
