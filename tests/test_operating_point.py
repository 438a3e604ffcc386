"""Operating points chosen on validation data: Youden's J (the default) and a fixed target
specificity (the lowest cut whose validation specificity reaches the target), on small cases
computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ucadi.learn.evaluate import YOUDEN, OperatingPoint, choose_threshold
from ucadi.learn.stats import (
    StatisticsError,
    sensitivity_specificity,
    specificity_threshold,
    youden_threshold,
)

# Ten negatives 0.1 ... 0.8, 0.9, 0.95 and two positives 0.85, 0.99.
NEGATIVES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
SCORES = np.array(NEGATIVES + [0.85, 0.99])
LABELS = np.array([0] * 10 + [1, 1])


def test_target_specificity_takes_the_lowest_cut_that_reaches_it() -> None:
    # 9 of 10 negatives must fall below the cut: the 9th is 0.9, so the cut is the midpoint
    # between 0.9 and the next score, 0.95.
    cut = specificity_threshold(SCORES, LABELS, 0.9)
    assert cut == pytest.approx(0.925)
    assert sensitivity_specificity(SCORES, LABELS, cut) == (0.5, 0.9)
    # Youden's J prefers sensitivity 1 / specificity 0.8 (J 0.8 against 0.4) on these cases.
    assert youden_threshold(SCORES, LABELS) == pytest.approx(0.825)
    # Every negative below: above 0.95, below 0.99.
    assert specificity_threshold(SCORES, LABELS, 1.0) == pytest.approx(0.97)
    # One negative below is enough for 0.05 (ceil(0.5) = 1): between 0.1 and 0.2.
    assert specificity_threshold(SCORES, LABELS, 0.05) == pytest.approx(0.15)


def test_a_target_that_is_an_exact_count_is_not_rounded_up() -> None:
    negatives = np.round(np.arange(1, 21) / 100, 2)  # 0.01 ... 0.20
    scores = np.r_[negatives, 0.5]
    labels = np.r_[np.zeros(20, dtype=int), 1]
    cut = specificity_threshold(scores, labels, 0.9)  # 18 of 20, not 19
    assert cut == pytest.approx(0.185)
    assert sensitivity_specificity(scores, labels, cut)[1] == 0.9


def test_tied_negatives_move_together_so_the_specificity_reached_can_exceed_the_target() -> None:
    scores = np.array([0.2, 0.5, 0.5, 0.5, 0.9])
    labels = np.array([0, 0, 0, 0, 1])
    # 2 of 4 negatives needed; no cut separates the three 0.5s, so the lowest cut reaching
    # the target puts all of them below (specificity 1.0).
    cut = specificity_threshold(scores, labels, 0.5)
    assert cut == pytest.approx(0.7)
    assert sensitivity_specificity(scores, labels, cut) == (1.0, 1.0)
    # A positive tied with negatives is called with them.
    tied = np.array([0.3, 0.6, 0.6, 0.8])
    cut = specificity_threshold(tied, np.array([0, 0, 1, 1]), 0.5)
    assert cut == pytest.approx(0.45)
    assert sensitivity_specificity(tied, np.array([0, 0, 1, 1]), cut) == (1.0, 0.5)


def test_degenerate_validation_sets_and_targets_are_refused() -> None:
    with pytest.raises(StatisticsError, match="positive and one negative"):
        specificity_threshold(np.array([0.1, 0.2]), np.array([0, 0]), 0.9)
    with pytest.raises(StatisticsError, match="positive and one negative"):
        specificity_threshold(np.array([0.1, 0.2]), np.array([1, 1]), 0.9)
    for target in (0.0, -0.1, 1.2):
        with pytest.raises(StatisticsError, match=r"in \(0, 1\]"):
            specificity_threshold(SCORES, LABELS, target)


def test_operating_points_parse_and_choose_the_threshold() -> None:
    assert OperatingPoint.parse("youden") == YOUDEN
    point = OperatingPoint.parse("specificity:0.90")
    assert (point.rule, point.target, str(point)) == ("specificity", 0.9, "specificity:0.9")
    assert choose_threshold(SCORES, LABELS, point) == pytest.approx(0.925)
    assert choose_threshold(SCORES, LABELS) == youden_threshold(SCORES, LABELS)
    assert OperatingPoint.parse(str(point)) == point
    for text, problem in (("sensitivity:0.9", "unknown operating point"),
                          ("specificity", "unknown operating point"),
                          ("specificity:high", "is not a number"),
                          ("specificity:1.5", "outside")):
        with pytest.raises(StatisticsError, match=problem) as error:
            OperatingPoint.parse(text)
        assert "youden" in str(error.value) and "specificity:T" in str(error.value)
