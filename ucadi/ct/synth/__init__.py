"""Synthetic multi-hospital chest-CT cohort: phantoms, lesions, scanners, DICOM, manifest."""

from ucadi.ct.synth.cohort import generate_case, generate_cohort, read_cohort_info
from ucadi.ct.synth.manifest import MANIFEST_COLUMNS, CaseRecord, ManifestError, read_manifest
from ucadi.ct.synth.sites import LABELS, PRESETS, SITES, plan_cohort

__all__ = ["generate_cohort", "generate_case", "read_cohort_info", "read_manifest",
           "CaseRecord", "ManifestError", "MANIFEST_COLUMNS", "LABELS", "PRESETS", "SITES",
           "plan_cohort"]
