"""Evaluation outputs a clinical reader expects: markdown table, ROC, confusion, reliability."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ucadi.errors import UcadiError  # noqa: E402
from ucadi.learn.evaluate import task_truth  # noqa: E402
from ucadi.learn.stats import roc_points  # noqa: E402


@dataclass(frozen=True)
class ReaderPoint:
    """One human reader's operating point (e.g. a radiologist), plotted on the ROC."""

    name: str
    sensitivity: float
    specificity: float


def read_readers(path: Path) -> list[ReaderPoint]:
    """Reader operating points from a CSV with columns reader, sensitivity, specificity."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        points = [ReaderPoint(row["reader"], float(row["sensitivity"]),
                              float(row["specificity"])) for row in rows]
    except (OSError, KeyError, ValueError) as exc:
        raise UcadiError(f"cannot read reader operating points from {path}: {exc}; expected a "
                         f"CSV with columns reader,sensitivity,specificity (values in 0..1)"
                         ) from None
    for point in points:
        if not (0 <= point.sensitivity <= 1 and 0 <= point.specificity <= 1):
            raise UcadiError(f"reader {point.name!r} in {path}: sensitivity and specificity "
                             f"must lie in 0..1")
    return points


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _ci(values: dict[str, Any], key: str) -> str:
    return (f"{_fmt(values[key])} ({_fmt(values[f'{key}_ci_low'])}-"
            f"{_fmt(values[f'{key}_ci_high'])})")


def class_tables(block: dict[str, Any], what: str) -> list[str]:
    """Markdown of a multiclass_report: headline, per-class rates and AUC, confusion matrix."""
    if "confusion" not in block:
        return [f"No {what} to evaluate."]
    names = block["class_names"]
    headline = (f"Accuracy {block['accuracy']:.3f} on {block['cases']} CTs; macro one-vs-rest "
                f"AUC {_ci(block, 'macro_auc')} (95 % CI, stratified bootstrap; over "
                f"{', '.join(block['macro_auc_classes']) or 'no class'})")
    if "quadratic_kappa" in block:
        headline += f"; quadratic-weighted kappa {_fmt(block['quadratic_kappa'])}"
    lines = [headline + ".", "", f"| {what} | n | sensitivity | specificity | one-vs-rest AUC "
             "(95 % CI, DeLong) |", "|---|---|---|---|---|"]
    for name, values in block["per_class"].items():
        lines.append(f"| {name} | {values['n']} | {_fmt(values['sensitivity'])} | "
                     f"{_fmt(values['specificity'])} | {_ci(values, 'auc')} |")
    lines += ["", "Confusion matrix (rows true, columns called):", "",
              "| true \\ called | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    lines += [f"| {name} | " + " | ".join(str(c) for c in row) + " |"
              for name, row in zip(names, block["confusion"], strict=True)]
    return lines


def severity_markdown(report: dict[str, Any], title: str) -> str:
    """A severity model's report as markdown: grades overall, then per site."""
    lines = [f"# {title}", "", f"COVID-19 severity grades on {report['cases']} graded COVID-19 "
             f"CTs ({report['excluded_cases']} other CTs left out: non-COVID-19 or ungraded); "
             "each CT is called its most probable grade.", ""]
    lines += class_tables(report["severity"], "grade")
    lines += ["", "| site | CTs | accuracy | macro AUC (95 % CI) | quadratic-weighted kappa |",
              "|---|---|---|---|---|"]
    for site, block in report["per_site"].items():
        lines.append(f"| {site} | {block['cases']} | {_fmt(block.get('accuracy', math.nan))} | "
                     f"{_ci(block, 'macro_auc')} | {_fmt(block['quadratic_kappa'])} |")
    return "\n".join(lines) + "\n"


def markdown_report(report: dict[str, Any], title: str) -> str:
    """The report's headline numbers as markdown tables."""
    if report.get("task") == "severity":
        return severity_markdown(report, title)
    lines = [f"# {title}", "", f"CTs: {report['cases']}; COVID-19 called at probability >= "
             f"{report['ct_level']['threshold']:.3f} (chosen on validation data, Youden's J).", "",
             "| level | n+ | n- | sensitivity | specificity | AUC (95 % CI, DeLong) |",
             "|---|---|---|---|---|---|"]
    rows = [("CT", report["ct_level"]), ("patient", report["patient_level"])]
    rows += [(f"site {site}", values) for site, values in report["per_site"].items()]
    for name, values in rows:
        lines.append(f"| {name} | {values['n_pos']} | {values['n_neg']} | "
                     f"{_fmt(values['sensitivity'])} | {_fmt(values['specificity'])} | "
                     f"{_ci(values, 'auc')} |")
    if "auc_bootstrap_ci_low" in report["ct_level"]:
        ct = report["ct_level"]
        lines += ["", f"Bootstrap 95 % CI of the CT-level AUC: {ct['auc_bootstrap_ci_low']:.3f}-"
                      f"{ct['auc_bootstrap_ci_high']:.3f}."]
    if "calibration" in report:
        lines += ["", f"Expected calibration error (10 bins): {report['calibration']['ece']:.3f}."]
    if "comparison" in report:
        comparison = report["comparison"]
        lines += ["", f"Compared model: AUC {comparison['auc']:.3f} vs "
                      f"{comparison['auc_other']:.3f}, DeLong p = {comparison['delong_p']:.4f}."]
    if "four_class" in report:
        lines += ["", "## Four classes", "",
                  "CTs with a four-class diagnosis (not the UK-style site's binary labels), each "
                  "called its most probable class.", ""]
        lines += class_tables(report["four_class"], "class")
    return "\n".join(lines) + "\n"


def plot_roc(path: Path, scores: np.ndarray, labels: np.ndarray, auc: float,
             threshold: float, readers: Sequence[ReaderPoint] = ()) -> None:
    """ROC curve with the model's operating point and optional reader points."""
    fpr, tpr = roc_points(scores, labels)
    called = scores >= threshold
    sens = float(called[labels == 1].mean())
    spec = float((~called)[labels == 0].mean())
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot(fpr, tpr, label=f"model (AUC {auc:.3f})")
    axis.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axis.scatter([1 - spec], [sens], marker="o", color="black", zorder=3,
                 label=f"model at {threshold:.2f}")
    for reader in readers:
        axis.scatter([1 - reader.specificity], [reader.sensitivity], marker="^", zorder=3,
                     label=reader.name)
    axis.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01),
             title="COVID-19 vs non-COVID-19")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_confusions(path: Path, matrices: Sequence[tuple[str, np.ndarray, Sequence[str]]]) -> None:
    """Confusion matrices side by side (rows true class, columns predicted)."""
    figure, axes = plt.subplots(1, len(matrices), figsize=(4.5 * len(matrices), 4.2))
    for axis, (title, matrix, names) in zip(np.atleast_1d(axes), matrices, strict=True):
        matrix = np.asarray(matrix)
        axis.imshow(matrix, cmap="Blues")
        for (row, col), count in np.ndenumerate(matrix):
            axis.text(col, row, str(count), ha="center", va="center",
                      color="white" if count > matrix.max() / 2 else "black")
        axis.set(xticks=range(len(names)), yticks=range(len(names)), title=title,
                 xlabel="predicted", ylabel="true")
        axis.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        axis.set_yticklabels(names, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_reliability(path: Path, calibration: dict[str, Any]) -> None:
    """Reliability curve: observed COVID-19 frequency against mean predicted probability."""
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect calibration")
    axis.plot(calibration["bin_confidence"], calibration["bin_frequency"], marker="o",
              label=f"model (ECE {calibration['ece']:.3f})")
    axis.set(xlabel="predicted COVID-19 probability", ylabel="observed frequency",
             xlim=(0, 1), ylim=(0, 1))
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_class_rocs(path: Path, probs: np.ndarray, truth: np.ndarray,
                    names: Sequence[str], title: str) -> None:
    """One-vs-rest ROC curve of every class present with cases and non-cases."""
    figure, axis = plt.subplots(figsize=(5, 5))
    for k, name in enumerate(names):
        positive = (np.asarray(truth) == k).astype(int)
        if 0 < positive.sum() < len(positive):
            fpr, tpr = roc_points(probs[:, k], positive)
            axis.plot(fpr, tpr, label=f"{name} (n={int(positive.sum())})")
    axis.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axis.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01),
             title=title)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(out_dir: Path, report: dict[str, Any], scores: np.ndarray, labels: np.ndarray,
                 title: str, readers: Sequence[ReaderPoint] = (), *,
                 probs: np.ndarray | None = None, records: Sequence[Any] = ()) -> list[Path]:
    """metrics.json and report.md in out_dir, and the figures that apply: a COVID-19 model's
    roc.png, confusion.png (two classes, and four for a four-class model) and
    reliability.png; a severity model's confusion.png and roc_classes.png (one-vs-rest per
    grade). `probs` (every CT's class probabilities) and the CTs' `records` give the
    one-vs-rest curves of a four-class or severity model."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "metrics.json", out_dir / "report.md"]
    written[0].write_text(json.dumps(report, indent=2, default=float) + "\n")
    written[1].write_text(markdown_report(report, title))
    task = report.get("task", "binary")
    block = report.get("severity" if task == "severity" else "four_class", {})
    matrices = []
    if task != "severity":
        ct = report["ct_level"]
        if 0 < labels.sum() < len(labels):
            plot_roc(out_dir / "roc.png", scores, labels, ct["auc"], ct["threshold"], readers)
            written.append(out_dir / "roc.png")
        matrices.append(("COVID-19 vs not (CT level)", np.array(ct["confusion_2class"]),
                         ["non-COVID", "COVID-19"]))
    if "confusion" in block:
        matrices.append((f"{'grades' if task == 'severity' else 'four classes'}",
                         np.array(block["confusion"]), list(block["class_names"])))
    if matrices:
        plot_confusions(out_dir / "confusion.png", matrices)
        written.append(out_dir / "confusion.png")
    if "confusion" in block and probs is not None and records:
        rows, truth = task_truth(records, task)
        plot_class_rocs(out_dir / "roc_classes.png", np.asarray(probs)[rows], truth,
                        block["class_names"], f"{task}: one-vs-rest ROC")
        written.append(out_dir / "roc_classes.png")
    if "calibration" in report:
        plot_reliability(out_dir / "reliability.png", report["calibration"])
        written.append(out_dir / "reliability.png")
    return written
