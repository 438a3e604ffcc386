"""The CT-native diagnosis: a study on disk -> averaged class probabilities (+ Grad-CAM).

The paper's test protocol: K independent adaptive 16-slice samplings (K = 5 by default) go
through the model together and their probability vectors are averaged. Preprocessing is the
`ucadi.ct` pipeline with the served model card's configuration; the forward pass goes through
the dynamic batcher so concurrent studies share batches; Grad-CAM runs on the first sampling
with the very model version that produced the probabilities.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from opentelemetry import trace

from services.inference.batching import DynamicBatcher
from services.inference.model_store import ServedModel
from services.inference.upload import UploadLimitError
from ucadi.ct import open_study, preprocess_study, sample_slice_indices
from ucadi.errors import UcadiError
from ucadi.model.gradcam import grad_cam

tracer = trace.get_tracer(__name__)

DEFAULT_SAMPLES = 5
MAX_SAMPLES = 16
COVID_CLASS = "covid"
# Heatmap montage: 16 sampled slices on a 4 x 4 grid, each panel enlarged to about this many
# pixels (small presets are 32 px), a title strip, and the overlay's opacity over the CT.
MONTAGE_COLUMNS = 4
MONTAGE_PANEL_PX = 128
MONTAGE_TITLE_PX = 16
HEATMAP_ALPHA = 0.45


class DiagnosisRequestError(UcadiError):
    """The diagnosis options are out of range."""

    status = "INVALID_ARGUMENT"


@dataclass(frozen=True)
class StudyFacts:
    """What was diagnosed: slice count, spacing, series."""

    slices: int
    spacing_mm: tuple[float, float, float]
    series_uid: str


@dataclass(frozen=True)
class Diagnosis:
    """The result of one study."""

    probabilities: np.ndarray          # (classes,) mean over samplings
    sample_probabilities: np.ndarray   # (samples, classes)
    served: ServedModel                # the model version that answered
    study: StudyFacts
    heatmap: np.ndarray | None         # (16, H, W) in [0, 1], sampling 0
    heatmap_slices: np.ndarray | None  # (16,) CT slice index of each heatmap slice
    sampled_ct: np.ndarray | None      # (16, H, W) the model input of sampling 0

    @property
    def predicted_class(self) -> str:
        """Name of the most probable class."""
        return self.served.class_names[int(np.argmax(self.probabilities))]

    @property
    def covid_probability(self) -> float:
        """Mean probability of the 'covid' class (0 when the model has no such class: a
        severity model grades a study already known to be COVID-19; its answer's
        probabilities are per grade and its card's task is 'severity')."""
        names = self.served.class_names
        return float(self.probabilities[names.index(COVID_CLASS)]) if COVID_CLASS in names else 0.0


def check_samples(samples: int) -> int:
    """The number of samplings to use (0 -> the paper's 5), or DiagnosisRequestError."""
    samples = samples or DEFAULT_SAMPLES
    if not 1 <= samples <= MAX_SAMPLES:
        raise DiagnosisRequestError(f"samples must be between 1 and {MAX_SAMPLES} (0 means "
                                    f"{DEFAULT_SAMPLES}); got {samples}")
    return samples


def sampled_slice_indices(num_slices: int, slices: int, seed: int) -> np.ndarray:
    """CT slice indices of the first sampling drawn by `preprocess_study` with this seed.

    The pipeline draws its K samplings from one generator seeded with `seed`; the first
    sampling is therefore the first draw. tests/test_inference_diagnosis.py checks this
    stays true against the pipeline itself.
    """
    return sample_slice_indices(num_slices, slices, np.random.default_rng(seed))


def diagnose_study(path: Path, batcher: DynamicBatcher, *, served_now: ServedModel,
                   samples: int = DEFAULT_SAMPLES, seed: int = 0, series_uid: str | None = None,
                   want_heatmap: bool = False, max_slices: int | None = None,
                   deadline: float | None = None) -> Diagnosis:
    """Diagnose the study at `path` (DICOM folder, zip or NIfTI) the way the paper tests."""
    samples = check_samples(samples)
    config = served_now.preprocess
    with tracer.start_as_current_span("inference.preprocess") as span:
        with open_study(path, series_uid or None) as source:
            facts = StudyFacts(slices=source.num_slices,
                               spacing_mm=tuple(float(s) for s in source.spacing_mm),
                               series_uid=source.meta.series_uid or "")
        if max_slices is not None and facts.slices > max_slices:
            raise UploadLimitError(f"the series has {facts.slices} slices; this server accepts "
                                   f"at most {max_slices} (raise --max-slices to allow more)")
        tensor = preprocess_study(path, config, samples=samples, seed=seed,
                                  series_uid=series_uid or None)
        span.set_attribute("ucadi.study.slices", facts.slices)
        span.set_attribute("ucadi.samples", samples)
    rows = np.ascontiguousarray(tensor[:, None], dtype=np.float32)
    result = batcher.run(rows, deadline)
    served: ServedModel = result.tag
    per_sample = np.asarray(result.outputs, dtype=np.float32)
    mean = per_sample.mean(axis=0)
    heatmap = slices = None
    if want_heatmap:
        target = int(np.argmax(mean))
        with tracer.start_as_current_span("inference.gradcam"), served.explain_lock:
            heatmap = grad_cam(served.explainer(), torch.from_numpy(rows[:1]), target)
        slices = sampled_slice_indices(facts.slices, config.slices, seed)
    return Diagnosis(probabilities=mean, sample_probabilities=per_sample, served=served,
                     study=facts, heatmap=heatmap, heatmap_slices=slices,
                     sampled_ct=tensor[0] if want_heatmap else None)


def montage_png(ct_slices: np.ndarray, heatmap: np.ndarray, slice_indices: np.ndarray,
                title: str) -> bytes:
    """PNG of the sampled CT slices (grey) with the heatmap overlaid, one labelled panel each."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    count, height, width = ct_slices.shape
    zoom = max(1, MONTAGE_PANEL_PX // max(height, width))
    low, high = np.percentile(ct_slices, (1, 99))
    grey = np.clip((ct_slices - low) / max(high - low, 1e-6), 0.0, 1.0)[..., None]
    colour = colormaps["jet"](np.clip(heatmap, 0.0, 1.0))[..., :3]
    blended = (1.0 - HEATMAP_ALPHA) * grey + HEATMAP_ALPHA * colour
    panels = np.repeat(np.repeat(blended, zoom, axis=1), zoom, axis=2)
    rows = int(np.ceil(count / MONTAGE_COLUMNS))
    panel_h, panel_w = panels.shape[1:3]
    canvas = np.zeros((MONTAGE_TITLE_PX + rows * panel_h, MONTAGE_COLUMNS * panel_w, 3))
    for i in range(count):
        top = MONTAGE_TITLE_PX + (i // MONTAGE_COLUMNS) * panel_h
        left = (i % MONTAGE_COLUMNS) * panel_w
        canvas[top:top + panel_h, left:left + panel_w] = panels[i]
    image = Image.fromarray((canvas * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.text((4, 4), title, fill=(255, 255, 255))
    for i, index in enumerate(slice_indices):
        top = MONTAGE_TITLE_PX + (i // MONTAGE_COLUMNS) * panel_h
        draw.text(((i % MONTAGE_COLUMNS) * panel_w + 3, top + 2), f"slice {int(index)}",
                  fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
