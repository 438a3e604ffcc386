"""The clinical report: CT and patient level, sites, four-class confusion, markdown and plots."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from ucadi.errors import UcadiError
from ucadi.learn.evaluate import clinical_report
from ucadi.learn.recipe import FOUR_CLASS_NAMES
from ucadi.learn.report import markdown_report, read_readers, write_report

LABELS = ["healthy", "covid", "other_viral", "bacterial", "non_covid", "covid"]


def _cohort():
    records, probs = [], []
    for i in range(24):
        label = LABELS[i % len(LABELS)]
        site = "nccid-uk" if label == "non_covid" else ("main-campus", "sino-french")[i % 2]
        records.append(SimpleNamespace(case_id=f"c{i}", patient_id=f"p{i // 2}", site=site,
                                       label=label, binary_label=int(label == "covid")))
        # A perfect model: the true class (healthy for the binary-only non-COVID cases).
        row = np.full(4, 0.1)
        row[0 if label == "non_covid" else FOUR_CLASS_NAMES.index(label)] = 0.7
        probs.append(row)
    return records, np.array(probs)


def test_report_has_ct_patient_site_and_four_class_results():
    records, probs = _cohort()
    report = clinical_report(probs, records, FOUR_CLASS_NAMES, threshold=0.5)
    ct = report["ct_level"]
    assert ct["n_pos"] == 8 and ct["n_neg"] == 16
    assert ct["sensitivity"] == 1.0 and ct["specificity"] == 1.0
    assert report["patient_level"]["patients"] == 12
    assert set(report["per_site"]) == {"main-campus", "sino-french", "nccid-uk"}
    four = report["four_class"]
    # UK-style binary-only cases have no four-class truth and are left out of that table.
    assert four["cases"] == 20
    matrix = np.array(four["confusion"])
    assert matrix.sum() == 20 and np.trace(matrix) == 20
    assert four["per_class"]["covid"]["auc"] == 1.0
    assert four["per_class"]["other_viral"]["n"] == 4
    assert four["per_class"]["bacterial"]["sensitivity"] == 1.0
    assert four["per_class"]["healthy"]["specificity"] == 1.0
    assert (four["macro_auc"], four["macro_auc_ci_low"]) == (1.0, 1.0)
    assert np.array(ct["confusion_2class"]).tolist() == [[16, 0], [0, 8]]


def test_markdown_and_plots_are_written(tmp_path):
    records, probs = _cohort()
    report = clinical_report(probs, records, FOUR_CLASS_NAMES, threshold=0.5)
    labels = np.array([r.binary_label for r in records])
    files = write_report(tmp_path, report, probs[:, 1], labels, "unit", probs=probs,
                         records=records)
    assert {f.name for f in files} == {"metrics.json", "report.md", "roc.png", "confusion.png",
                                       "reliability.png", "roc_classes.png"}
    text = markdown_report(report, "unit")
    assert "| CT | 8 | 16 | 1.000 | 1.000 |" in text and "one-vs-rest" in text
    assert "| other_viral | 4 | 1.000 | 1.000 |" in text and "| healthy | 4 | 0 | 0 | 0 |" in text


def test_reader_points_must_be_a_csv_of_rates(tmp_path):
    good = tmp_path / "readers.csv"
    good.write_text("reader,sensitivity,specificity\nmean of six,0.79,0.90\n")
    assert read_readers(good)[0].sensitivity == pytest.approx(0.79)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,sens\nA,79\n")
    with pytest.raises(UcadiError, match="reader,sensitivity,specificity"):
        read_readers(bad)
