"""A diagnosis as the page shows it: the summary, the viewer's slices and the downloads.

The viewer shows the slices of the first sampling (the one Grad-CAM explains) in Hounsfield
units, so the page can apply any window (lung, mediastinum), with the heatmap resized to the
same grid. Results stay in memory for the page only (the newest RECENT_RESULTS, at most
RESULT_TTL_S); the history keeps no pixels.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.inference.diagnosis import Diagnosis, montage_png
from ucadi.ct import open_study, resize_slices

# Viewer grid: the CT's own matrix, reduced to at most this many pixels a side.
VIEWER_MAX_PX = 256
RECENT_RESULTS = 16
RESULT_TTL_S = 3600.0
# int16 holds every Hounsfield unit a CT stores (-1024 .. 3071 and beyond).
HU_MIN, HU_MAX = -32768, 32767


@dataclass(frozen=True)
class PageResult:
    """One diagnosis for the page: JSON summary, viewer arrays, montage."""

    id: str
    summary: dict[str, Any]
    ct_hu: np.ndarray         # (16, rows, columns) int16
    heatmap: np.ndarray       # (16, rows, columns) uint8, 0..255
    montage_png: bytes
    created: float


def card_summary(diagnosis: Diagnosis) -> dict[str, Any]:
    """What the page shows of the served model's card."""
    card = diagnosis.served.card
    training = card.training or {}
    return {
        "version": diagnosis.served.version, "arch": card.arch, "preset": card.preset,
        "class_names": list(diagnosis.served.class_names), "input_shape": list(card.input_shape),
        "parameters": card.parameters, "created_at": card.created_at,
        "weights_sha256": card.weights_sha256[:16],
        "training": {key: training[key] for key in ("sites", "epochs", "rounds", "cases")
                     if key in training},
        "validation": {key: card.metrics[key] for key in ("auc", "sensitivity", "specificity")
                       if isinstance(card.metrics.get(key), (int, float))},
    }


def operating_threshold(diagnosis: Diagnosis) -> float | None:
    """The COVID-19 threshold chosen on validation data, as the card records it (or None)."""
    value = diagnosis.served.card.metrics.get("threshold")
    return float(value) if isinstance(value, (int, float)) else None


def summarize(diagnosis: Diagnosis, study_uid: str, upload_bytes: int) -> dict[str, Any]:
    """The JSON the page shows and offers for download."""
    names = list(diagnosis.served.class_names)
    per_sample = diagnosis.sample_probabilities
    covid = per_sample[:, names.index("covid")] if "covid" in names else np.zeros(len(per_sample))
    threshold = operating_threshold(diagnosis)
    return {
        "predicted_class": diagnosis.predicted_class,
        "covid_probability": round(diagnosis.covid_probability, 6),
        "threshold": threshold,
        "above_threshold": None if threshold is None else diagnosis.covid_probability >= threshold,
        "probabilities": {name: round(float(p), 6)
                          for name, p in zip(names, diagnosis.probabilities, strict=True)},
        "samplings": {"count": int(len(per_sample)),
                      "covid_probabilities": [round(float(p), 6) for p in covid],
                      "min": round(float(covid.min()), 6), "max": round(float(covid.max()), 6),
                      "std": round(float(covid.std()), 6)},
        "model": card_summary(diagnosis),
        "study": {"study_uid": study_uid, "series_uid": diagnosis.study.series_uid,
                  "slices": diagnosis.study.slices,
                  "spacing_mm": list(diagnosis.study.spacing_mm), "upload_bytes": upload_bytes},
    }


def viewer_arrays(path: Path, diagnosis: Diagnosis, series_uid: str | None
                  ) -> tuple[np.ndarray, np.ndarray, str]:
    """(CT slices in HU as int16, heatmap as uint8, study UID) on the viewer's grid."""
    indices = [int(i) for i in diagnosis.heatmap_slices]  # type: ignore[union-attr]
    with open_study(path, series_uid or None) as study:
        slices_hu = study.read_slices_hu(indices)
        study_uid = study.meta.study_uid or ""
    rows, columns = slices_hu.shape[1:]
    scale = min(1.0, VIEWER_MAX_PX / max(rows, columns))
    grid = (max(1, round(rows * scale)), max(1, round(columns * scale)))
    ct = resize_slices(slices_hu.astype(np.float32), grid)
    heat = resize_slices(diagnosis.heatmap.astype(np.float32), grid)  # type: ignore[union-attr]
    return (np.clip(np.rint(ct), HU_MIN, HU_MAX).astype(np.int16),
            np.clip(np.rint(heat * 255), 0, 255).astype(np.uint8), study_uid)


def page_result(path: Path, diagnosis: Diagnosis, upload_bytes: int,
                series_uid: str | None = None) -> PageResult:
    """Everything the page needs of one diagnosis (reads the sampled slices once more)."""
    ct, heat, study_uid = viewer_arrays(path, diagnosis, series_uid)
    title = (f"{diagnosis.predicted_class} (COVID-19 p={diagnosis.covid_probability:.3f}, "
             f"model {diagnosis.served.version})")
    montage = montage_png(diagnosis.sampled_ct, diagnosis.heatmap,  # type: ignore[arg-type]
                          diagnosis.heatmap_slices, title)  # type: ignore[arg-type]
    summary = summarize(diagnosis, study_uid, upload_bytes)
    summary["viewer"] = {"slices": int(ct.shape[0]), "rows": int(ct.shape[1]),
                         "columns": int(ct.shape[2]),
                         "slice_indices": [int(i) for i in diagnosis.heatmap_slices]}  # type: ignore[union-attr]
    result_id = uuid.uuid4().hex
    summary["id"] = result_id
    return PageResult(id=result_id, summary=summary, ct_hu=ct, heatmap=heat,
                      montage_png=montage, created=time.monotonic())


class RecentResults:
    """The newest results, for the viewer and downloads; older or expired ones are dropped."""

    def __init__(self, capacity: int = RECENT_RESULTS, ttl_s: float = RESULT_TTL_S) -> None:
        self.capacity, self.ttl_s = capacity, ttl_s
        self._results: OrderedDict[str, tuple[str, PageResult]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, owner: str, result: PageResult) -> None:
        """Keep `result` for its owner (the user who uploaded it)."""
        with self._lock:
            self._results[result.id] = (owner, result)
            while len(self._results) > self.capacity:
                self._results.popitem(last=False)

    def get(self, owner: str, result_id: str) -> PageResult | None:
        """The result, if it is still kept and belongs to `owner`."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k, (_, r) in self._results.items() if now - r.created > self.ttl_s]:
                del self._results[key]
            kept = self._results.get(result_id)
        return kept[1] if kept is not None and kept[0] == owner else None
