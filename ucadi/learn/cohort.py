"""Choosing a site's (or all sites') cases from a cohort manifest for training and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ucadi.errors import UcadiError

MANIFEST_NAME = "manifest.csv"
HOLDOUT_SPLIT = "holdout"


class CohortError(UcadiError):
    """The cohort folder, site or split asked for does not exist or is empty."""


def manifest_path(data: Path) -> Path:
    """The manifest of a cohort given as its folder or its manifest.csv."""
    path = Path(data)
    path = path / MANIFEST_NAME if path.is_dir() else path
    if not path.is_file():
        raise CohortError(f"no {MANIFEST_NAME} at {path}; pass the folder written by "
                          f"`ucadi synth --out DIR` (or its manifest.csv)")
    return path


def load_records(data: Path) -> list[Any]:
    """All CaseRecords of a cohort."""
    from ucadi.ct.synth import read_manifest

    return list(read_manifest(manifest_path(data)))


def select(records: list[Any], *, sites: list[str] | None, splits: list[str]) -> list[Any]:
    """Records in the given splits, of the given sites (None: every site in those splits)."""
    known_sites = sorted({r.site for r in records})
    for site in sites or []:
        if site not in known_sites:
            raise CohortError(f"site {site!r} is not in the cohort; sites: "
                              f"{', '.join(known_sites)}")
    chosen = [r for r in records if r.split in splits and (sites is None or r.site in sites)]
    if not chosen:
        raise CohortError(f"no cases in split(s) {splits} for site(s) {sites or 'all'}")
    return chosen


def training_sites(records: list[Any]) -> list[str]:
    """Sites that train (everything but the hold-out hospitals)."""
    return sorted({r.site for r in records if r.split != HOLDOUT_SPLIT})
