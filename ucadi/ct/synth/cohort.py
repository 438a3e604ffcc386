"""Generate the synthetic multi-hospital cohort: DICOM series, lesion masks and manifest.csv."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ucadi.ct.synth.dicom_writer import identity_for, write_series
from ucadi.ct.synth.lesions import paint_lesions
from ucadi.ct.synth.manifest import MANIFEST_NAME, write_manifest
from ucadi.ct.synth.phantom import build_chest
from ucadi.ct.synth.scanners import SCANNERS
from ucadi.ct.synth.sites import PRESETS, CasePlan, plan_cohort

# Cranio-caudal coverage of a chest CT, lung apex to the upper abdomen (mm).
CHEST_COVERAGE_MM = (280.0, 330.0)
COHORT_INFO_NAME = "cohort.json"


def generate_case(plan: CasePlan, preset_name: str, seed: int, out_dir: Path) -> dict[str, object]:
    """Make one case's phantom, lesions and scanner image; write its series and mask."""
    preset = PRESETS[preset_name]
    scanner = SCANNERS[plan.scanner]
    rng = np.random.default_rng([seed, plan.index])
    coverage = rng.uniform(*CHEST_COVERAGE_MM)
    slices = preset.slices_for(scanner.slice_thickness_mm, coverage, rng)
    slice_mm = coverage / slices
    matrix = preset.matrix_for(scanner.small_matrix, scanner.native_matrix)
    pixel_mm = scanner.fov_mm / matrix
    chest = build_chest(slices, matrix, pixel_mm, slice_mm, plan.contrast, rng)
    mask = paint_lesions(chest, plan.disease, plan.severity, rng)
    image = scanner.reconstruct(chest.hu, pixel_mm, slice_mm, rng)
    case_dir = Path(plan.site) / plan.case_id
    series_path = case_dir / "dicom"
    mask_path = case_dir / "lesion_mask.npy"
    study_date = f"2020{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    identity = identity_for(plan.case_id, plan.patient_id, seed, study_date)
    write_series(out_dir / series_path, image, scanner, identity, plan.contrast, pixel_mm, slice_mm)
    np.save(out_dir / mask_path, mask)
    return {"case_id": plan.case_id, "patient_id": plan.patient_id, "site": plan.site,
            "split": plan.split, "label": plan.label, "binary_label": plan.binary_label,
            "severity": plan.severity, "contrast": int(plan.contrast), "slices": slices,
            "series_path": series_path.as_posix(), "mask_path": mask_path.as_posix()}


def _generate(job: tuple[CasePlan, str, int, Path]) -> dict[str, object]:
    return generate_case(*job)


def generate_cohort(out_dir: str | Path, preset: str = "tiny", seed: int = 0,
                    workers: int | None = None, show_progress: bool = True) -> Path:
    """Generate the cohort into out_dir; return the manifest path."""
    out_dir = Path(out_dir)
    plans = plan_cohort(preset, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, workers or os.cpu_count() or 1)
    jobs = [(plan, preset, seed, out_dir) for plan in plans]
    rows: list[dict[str, object]] = []
    with Progress(TextColumn(f"synth {preset}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), disable=not show_progress) as progress:
        task = progress.add_task("cases", total=len(jobs))
        if workers == 1:
            for job in jobs:
                rows.append(_generate(job))
                progress.advance(task)
        else:
            with Pool(workers) as pool:
                # Ordered results keep the manifest identical whatever the worker count.
                for row in pool.imap(_generate, jobs, chunksize=1):
                    rows.append(row)
                    progress.advance(task)
    manifest = out_dir / MANIFEST_NAME
    write_manifest(manifest, rows)
    info = {"preset": preset, "seed": seed, "cases": len(rows),
            "preset_spec": asdict(PRESETS[preset])}
    (out_dir / COHORT_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    return manifest


def read_cohort_info(out_dir: str | Path) -> dict:
    """The preset and seed a cohort folder was generated with."""
    return json.loads((Path(out_dir) / COHORT_INFO_NAME).read_text())
