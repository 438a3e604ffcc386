"""Cross-validation folds: by patient, disjoint, covering, with classes spread over folds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ucadi.errors import UcadiError
from ucadi.learn.session import folds_by_patient


def _records():
    records = []
    for patient in range(30):
        label = ("covid", "healthy", "bacterial")[patient % 3]
        for ct in range(1 + patient % 2):  # some patients have two CTs
            records.append(SimpleNamespace(case_id=f"c{patient}-{ct}", patient_id=f"p{patient}",
                                           label=label))
    return records


def test_folds_keep_each_patients_cts_together_and_cover_every_case_once():
    records = _records()
    folds = folds_by_patient(records, 5, seed=0)
    flat = sorted(i for fold in folds for i in fold)
    assert flat == list(range(len(records)))
    owner = {}
    for k, fold in enumerate(folds):
        for i in fold:
            assert owner.setdefault(records[i].patient_id, k) == k


def test_every_fold_gets_every_class_and_the_split_depends_on_the_seed():
    records = _records()
    folds = folds_by_patient(records, 5, seed=0)
    for fold in folds:
        assert {records[i].label for i in fold} == {"covid", "healthy", "bacterial"}
    assert folds != folds_by_patient(records, 5, seed=1)
    assert folds == folds_by_patient(records, 5, seed=0)


def test_too_few_patients_for_the_folds_is_refused():
    with pytest.raises(UcadiError, match="3 patients cannot fill 5 folds"):
        folds_by_patient(_records()[:4], 5, seed=0)
