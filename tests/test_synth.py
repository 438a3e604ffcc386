"""The synthetic multi-hospital cohort: manifest rules, DICOM round trip, class signal."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ucadi.cli import main as ucadi_main
from ucadi.ct import PreprocessConfig, load_study, preprocess_study
from ucadi.ct.synth import (
    MANIFEST_COLUMNS,
    CaseRecord,
    ManifestError,
    generate_case,
    plan_cohort,
    read_manifest,
)
from ucadi.ct.synth.sites import PRESETS, SITES, allocate

# The ground-glass band: denser than aerated lung, lighter than soft tissue.
GROUND_GLASS_BAND_HU = (-750.0, -300.0)
PARTICIPANTS = ("main-campus", "optical-valley", "sino-french", "nccid-uk")
HOLDOUTS = ("wuhan-union", "wuhan-tianyou")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[CaseRecord]:
    out = tmp_path_factory.mktemp("cohort")
    assert ucadi_main(["synth", "--preset", "tiny", "--out", str(out), "--workers", "2"]) == 0
    return read_manifest(out / "manifest.csv")


def test_manifest_has_the_agreed_columns_sites_and_splits(cohort: list[CaseRecord]) -> None:
    manifest = cohort[0].series_dir.parents[2] / "manifest.csv"
    assert manifest.read_text().splitlines()[0].split(",") == list(MANIFEST_COLUMNS)
    by_site = Counter((r.site, r.split) for r in cohort)
    for site in PARTICIPANTS:
        assert by_site[(site, "train")] == PRESETS["tiny"].split_cases["train"]  # type: ignore[index]
        assert by_site[(site, "val")] >= 1 and by_site[(site, "test")] >= 1
    for site in HOLDOUTS:
        cases = [r for r in cohort if r.site == site]
        assert cases and all(r.split == "holdout" and r.label == "covid" for r in cases)


def test_labels_follow_each_sites_scheme(cohort: list[CaseRecord]) -> None:
    for record in cohort:
        assert record.binary_label == int(record.label == "covid")
        assert (record.severity > 0) == (record.label == "covid")
        if record.site == "nccid-uk":
            assert record.label in ("covid", "non_covid")
        else:
            assert record.label in ("healthy", "covid", "other_viral", "bacterial")
            assert record.contrast == 0
    main_campus = {r.label for r in cohort if r.site == "main-campus" and r.split == "train"}
    assert main_campus == {"healthy", "covid", "other_viral", "bacterial"}
    assert any(r.contrast for r in cohort if r.site == "nccid-uk")


def test_every_case_loads_with_its_mask_aligned(cohort: list[CaseRecord]) -> None:
    for record in cohort[::7]:
        study = load_study(record.series_dir)
        mask = np.load(record.mask_file)
        assert study.volume_hu.shape == mask.shape and mask.dtype == np.uint8
        assert study.meta.num_slices == record.slices >= 40
        assert study.meta.contrast is (True if record.contrast else None)
        # Lesions sit in lung, not in air or bone: their HU lies between air and soft tissue.
        if mask.any():
            assert -950 < float(np.median(study.volume_hu[mask > 0])) < 100


def test_covid_cases_have_more_ground_glass_than_healthy_ones(cohort: list[CaseRecord]) -> None:
    def band_fraction(record: CaseRecord) -> float:
        hu = load_study(record.series_dir).volume_hu
        aerated_or_hazy = (hu > -1000) & (hu < GROUND_GLASS_BAND_HU[1])
        band = (hu > GROUND_GLASS_BAND_HU[0]) & (hu < GROUND_GLASS_BAND_HU[1])
        return float(band.sum()) / max(1, int(aerated_or_hazy.sum()))

    for site in ("main-campus", "optical-valley", "sino-french"):
        covid = [band_fraction(r) for r in cohort if r.site == site and r.label == "covid"]
        healthy = [band_fraction(r) for r in cohort if r.site == site and r.label == "healthy"]
        assert np.mean(covid) > np.mean(healthy), site


def test_cases_preprocess_to_model_inputs(cohort: list[CaseRecord]) -> None:
    tensor = preprocess_study(cohort[0].series_dir, PreprocessConfig(size=(32, 32)), 2, seed=0)
    assert tensor.shape == (2, 16, 32, 32) and np.isfinite(tensor).all()


def test_generation_is_deterministic_by_seed(tmp_path: Path) -> None:
    plan = plan_cohort("tiny", 5)[1]
    digests = []
    for run in ("a", "b"):
        generate_case(plan, "tiny", 5, tmp_path / run)
        files = sorted((tmp_path / run).rglob("*"))
        digests.append([(f.relative_to(tmp_path / run).as_posix(),
                         hashlib.sha256(f.read_bytes()).hexdigest()) for f in files if f.is_file()])
    assert digests[0] == digests[1]
    assert plan_cohort("tiny", 5) == plan_cohort("tiny", 5)
    diseases = [[p.disease for p in plan_cohort("tiny", seed)] for seed in (5, 6)]
    assert diseases[0] != diseases[1]


def test_paper_preset_reproduces_the_papers_case_counts() -> None:
    plans = plan_cohort("paper", 0)
    china = Counter(p.disease for p in plans if p.site in PARTICIPANTS[:3])
    assert china == {"healthy": 342 + 80, "covid": 405 + 94, "other_viral": 56 + 20,
                     "bacterial": 292 + 60}
    uk = [p for p in plans if p.site == "nccid-uk"]
    assert len(uk) == 421 + 170 + 243 + 102
    assert Counter(p.site for p in plans if p.split == "holdout") == {"wuhan-union": 506,
                                                                       "wuhan-tianyou": 645}
    assert {s.name for s in SITES} == set(PARTICIPANTS + HOLDOUTS)


def test_allocation_keeps_rare_classes_rare() -> None:
    counts = allocate(8, {"healthy": 110, "covid": 130, "other_viral": 2, "bacterial": 85})
    assert sum(counts.values()) == 8 and "other_viral" not in counts


def test_missing_manifest_is_an_actionable_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="ucadi synth"):
        read_manifest(tmp_path)
