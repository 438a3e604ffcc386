"""Chest CT ingestion and the papers' preprocessing pipeline (one definition used everywhere)."""

from ucadi.ct.dicom_series import MIN_SLICES
from ucadi.ct.errors import (
    CorruptSliceError,
    CTInputError,
    InconsistentGeometryError,
    NoPixelDataError,
    NotCTError,
    NotDicomError,
    SeriesNotFoundError,
    TooFewSlicesError,
    UnsupportedTransferSyntaxError,
)
from ucadi.ct.hounsfield import AIR_HU, LUNG_WINDOW_HU, lung_window, to_hounsfield
from ucadi.ct.loader import CTStudy, StudyMetadata, StudySource, load_study, open_study
from ucadi.ct.preprocess import (
    SAMPLED_SLICES,
    TEST_SAMPLINGS,
    PreprocessConfig,
    load_stack,
    preprocess_study,
    preprocess_volume,
    resize_slices,
    sample_slice_indices,
    sample_stack,
    sampling_plan,
    zscore,
)

__all__ = [
    "AIR_HU", "LUNG_WINDOW_HU", "MIN_SLICES", "SAMPLED_SLICES", "TEST_SAMPLINGS",
    "CorruptSliceError", "CTInputError", "InconsistentGeometryError", "NoPixelDataError",
    "NotCTError", "NotDicomError", "SeriesNotFoundError", "TooFewSlicesError",
    "UnsupportedTransferSyntaxError",
    "CTStudy", "StudyMetadata", "StudySource", "PreprocessConfig",
    "load_study", "open_study", "load_stack", "sample_stack", "preprocess_study",
    "preprocess_volume", "sample_slice_indices", "sampling_plan", "resize_slices", "zscore",
    "lung_window", "to_hounsfield",
]
