"""The synthetic federation's hospitals (SPEC section 2) and the presets that scale them.

Three Chinese non-contrast sites with different scanners and class mixes, one UK-like site
(NCCID, many scanners, mostly contrast-enhanced, COVID/non-COVID labels only) and two COVID-only
hold-out hospitals. `paper` reproduces the papers' case counts; `medium` (experiments), `small`
(demo) and `tiny` (unit tests) keep each site's class mix at a fraction of the size;
`small-eval4x` trains on `small`'s case counts and evaluates on four times as many CTs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ucadi.errors import UcadiError

LABELS = ("healthy", "covid", "other_viral", "bacterial")
NON_COVID = "non_covid"
SPLITS = ("train", "val", "test", "holdout")
# The papers' 5-fold cross-validation holds out a fifth of trainval; we keep 15 % as val.
VAL_FRACTION = 0.15
# Classes below this share of a site get no guaranteed case in scaled-down presets
# ("no or almost no other viral" at two sites stays that way).
MIN_SHARE_FOR_A_CASE = 0.05
# Scaled-down presets map scanners' slice thickness onto their slice-count range.
THINNEST_SLICE_MM = 1.0
THICKEST_SLICE_MM = 5.0
SLICE_COUNT_JITTER = 4


@dataclass(frozen=True)
class SiteSpec:
    """A hospital: its scanners, class counts (papers' scale), contrast use and label scheme."""

    name: str
    participant: bool
    scanners: tuple[str, ...]
    trainval: dict[str, int]
    test: dict[str, int]
    contrast_fraction: float = 0.0
    binary_labels: bool = False
    severity_weights: tuple[float, float, float] = (0.4, 0.4, 0.2)


SITES: tuple[SiteSpec, ...] = (
    # China trainval 342/405/56/292 and test 80/94/20/60 (healthy/covid/viral/bacterial), split
    # over the three Wuhan sites; the latter two have (almost) no other viral pneumonia.
    SiteSpec("main-campus", True, ("ge-discovery-750", "siemens-definition-as"),
             {"healthy": 142, "covid": 165, "other_viral": 54, "bacterial": 132},
             {"healthy": 30, "covid": 34, "other_viral": 18, "bacterial": 24}),
    SiteSpec("optical-valley", True, ("philips-brilliance-ict",),
             {"healthy": 110, "covid": 130, "other_viral": 2, "bacterial": 85},
             {"healthy": 26, "covid": 32, "other_viral": 2, "bacterial": 20}),
    SiteSpec("sino-french", True, ("toshiba-aquilion-one", "uih-uct-760"),
             {"healthy": 90, "covid": 110, "other_viral": 0, "bacterial": 75},
             {"healthy": 24, "covid": 28, "other_viral": 0, "bacterial": 16}),
    # NCCID: contrast trainval 421 + non-contrast 170 = 591, test 243 + 102 = 345 (about 71 %
    # contrast); labels COVID / non-COVID; the hidden non-COVID diagnoses still shape the images.
    SiteSpec("nccid-uk", True, ("siemens-force", "ge-revolution", "canon-aquilion-prime",
                                "philips-ingenuity", "ge-optima-660", "siemens-edge"),
             {"healthy": 148, "covid": 296, "other_viral": 59, "bacterial": 88},
             {"healthy": 86, "covid": 173, "other_viral": 34, "bacterial": 52},
             contrast_fraction=421 / 591, binary_labels=True),
    # Hold-out COVID-only sets: Union (harder, milder cases), Tianyou (more severe).
    SiteSpec("wuhan-union", False, ("ge-lightspeed-vct",), {}, {"covid": 506},
             severity_weights=(0.6, 0.3, 0.1)),
    SiteSpec("wuhan-tianyou", False, ("siemens-emotion",), {}, {"covid": 645},
             severity_weights=(0.15, 0.45, 0.4)),
)


@dataclass(frozen=True)
class Preset:
    """Cohort size and image size: cases per split per site, matrix and slice counts."""

    name: str
    split_cases: dict[str, int] | None
    holdout_cases: int | None
    matrix: int | None
    slices: tuple[int, int] | None

    def slices_for(self, thickness_mm: float, coverage_mm: float, rng: np.random.Generator) -> int:
        """Slice count: native (coverage / thickness), or the preset's range, thin scanners high."""
        if self.slices is None:
            return int(round(coverage_mm / thickness_mm))
        low, high = self.slices
        thin = np.clip((THICKEST_SLICE_MM - thickness_mm) / (THICKEST_SLICE_MM - THINNEST_SLICE_MM),
                       0, 1)
        jitter = int(rng.integers(-SLICE_COUNT_JITTER, SLICE_COUNT_JITTER + 1))
        return int(np.clip(round(low + thin * (high - low)) + jitter, low, high))

    def matrix_for(self, small_matrix: int, native_matrix: int) -> int:
        """Matrix size for a scanner: fixed, the scanner's demo size, or its native size."""
        if self.matrix is not None:
            return self.matrix
        return native_matrix if self.name == "paper" else small_matrix


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", {"train": 8, "val": 2, "test": 3}, 3, matrix=64, slices=(40, 50)),
    "small": Preset("small", {"train": 32, "val": 10, "test": 15}, 15, matrix=None,
                    slices=(40, 70)),
    # 160 pooled test CTs: a DeLong 95 % interval of about +-0.05 at AUC 0.9, so differences
    # of a few hundredths between federated configurations show across seeds.
    "medium": Preset("medium", {"train": 64, "val": 16, "test": 40}, 40, matrix=None,
                     slices=(40, 70)),
    # The small cohort's training sets with four times its validation, test and hold-out sets
    # (240 pooled test CTs): the demo's training, measured with a quarter of the test noise.
    "small-eval4x": Preset("small-eval4x", {"train": 32, "val": 40, "test": 60}, 60,
                           matrix=None, slices=(40, 70)),
    "paper": Preset("paper", None, None, matrix=None, slices=None),
}


@dataclass(frozen=True)
class CasePlan:
    """Everything that decides one synthetic case before any voxel is made."""

    index: int
    case_id: str
    patient_id: str
    site: str
    split: str
    label: str
    disease: str
    binary_label: int
    severity: int
    contrast: bool
    scanner: str


def allocate(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split `total` cases over classes by weight (largest remainder), one for sizeable classes."""
    share = {k: w / sum(weights.values()) for k, w in weights.items() if w > 0}
    counts = {k: 1 for k, s in share.items() if s >= MIN_SHARE_FOR_A_CASE and total >= len(share)}
    rest = total - sum(counts.values())
    exact = {k: rest * s for k, s in share.items()}
    for k, value in exact.items():
        counts[k] = counts.get(k, 0) + int(value)
    remainder = total - sum(counts.values())
    for k in sorted(exact, key=lambda k: exact[k] - int(exact[k]), reverse=True)[:remainder]:
        counts[k] += 1
    return {k: v for k, v in counts.items() if v > 0}


def _split_counts(site: SiteSpec, preset: Preset) -> dict[str, dict[str, int]]:
    if not site.participant:
        total = sum(site.test.values()) if preset.holdout_cases is None else preset.holdout_cases
        return {"holdout": {"covid": total}}
    if preset.split_cases is None:
        train = {k: round(v * (1 - VAL_FRACTION)) for k, v in site.trainval.items()}
        val = {k: v - train[k] for k, v in site.trainval.items()}
        return {"train": train, "val": val, "test": dict(site.test)}
    return {split: allocate(total, site.test if split == "test" else site.trainval)
            for split, total in preset.split_cases.items()}


def plan_cohort(preset_name: str, seed: int) -> list[CasePlan]:
    """Every case of the cohort, deterministic in (preset, seed)."""
    if preset_name not in PRESETS:
        raise UcadiError(f"unknown synthetic cohort preset {preset_name!r}; choose one of "
                         f"{', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    rng = np.random.default_rng(seed)
    plans: list[CasePlan] = []
    for site in SITES:
        number = 0
        for split, counts in _split_counts(site, preset).items():
            diseases = [label for label, count in counts.items() for _ in range(count)]
            rng.shuffle(diseases)
            for disease in diseases:
                number += 1
                severity = int(rng.choice([1, 2, 3], p=site.severity_weights)) \
                    if disease == "covid" else 0
                label = disease if not site.binary_labels or disease == "covid" else NON_COVID
                plans.append(CasePlan(
                    index=len(plans), case_id=f"{site.name}-{number:04d}",
                    patient_id=f"{site.name[:2].upper()}{seed:03d}{number:05d}",
                    site=site.name, split=split, label=label, disease=disease,
                    binary_label=int(disease == "covid"), severity=severity,
                    contrast=bool(rng.random() < site.contrast_fraction),
                    scanner=str(rng.choice(site.scanners))))
    return plans
