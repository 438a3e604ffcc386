from ucadi.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StudyFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STUDY_FORMAT_UNSPECIFIED: _ClassVar[StudyFormat]
    STUDY_FORMAT_DICOM_FILES: _ClassVar[StudyFormat]
    STUDY_FORMAT_ZIP: _ClassVar[StudyFormat]
    STUDY_FORMAT_NIFTI: _ClassVar[StudyFormat]
STUDY_FORMAT_UNSPECIFIED: StudyFormat
STUDY_FORMAT_DICOM_FILES: StudyFormat
STUDY_FORMAT_ZIP: StudyFormat
STUDY_FORMAT_NIFTI: StudyFormat

class DiagnoseOptions(_message.Message):
    __slots__ = ("samples", "want_heatmap", "series_uid", "format", "seed")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    WANT_HEATMAP_FIELD_NUMBER: _ClassVar[int]
    SERIES_UID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    samples: int
    want_heatmap: bool
    series_uid: str
    format: StudyFormat
    seed: int
    def __init__(self, samples: _Optional[int] = ..., want_heatmap: _Optional[bool] = ..., series_uid: _Optional[str] = ..., format: _Optional[_Union[StudyFormat, str]] = ..., seed: _Optional[int] = ...) -> None: ...

class StudyFileChunk(_message.Message):
    __slots__ = ("name", "chunk")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    name: str
    chunk: _common_pb2.Chunk
    def __init__(self, name: _Optional[str] = ..., chunk: _Optional[_Union[_common_pb2.Chunk, _Mapping]] = ...) -> None: ...

class DiagnoseRequest(_message.Message):
    __slots__ = ("options", "file")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    options: DiagnoseOptions
    file: StudyFileChunk
    def __init__(self, options: _Optional[_Union[DiagnoseOptions, _Mapping]] = ..., file: _Optional[_Union[StudyFileChunk, _Mapping]] = ...) -> None: ...

class ClassProbability(_message.Message):
    __slots__ = ("class_name", "probability")
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    class_name: str
    probability: float
    def __init__(self, class_name: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class ModelCardSummary(_message.Message):
    __slots__ = ("arch", "preset", "class_names", "input_shape", "card_json")
    ARCH_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    CARD_JSON_FIELD_NUMBER: _ClassVar[int]
    arch: str
    preset: str
    class_names: _containers.RepeatedScalarFieldContainer[str]
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    card_json: str
    def __init__(self, arch: _Optional[str] = ..., preset: _Optional[str] = ..., class_names: _Optional[_Iterable[str]] = ..., input_shape: _Optional[_Iterable[int]] = ..., card_json: _Optional[str] = ...) -> None: ...

class Heatmap(_message.Message):
    __slots__ = ("shape", "dtype", "data", "png", "slice_indices")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    SLICE_INDICES_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    data: bytes
    png: bytes
    slice_indices: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., data: _Optional[bytes] = ..., png: _Optional[bytes] = ..., slice_indices: _Optional[_Iterable[int]] = ...) -> None: ...

class StudySummary(_message.Message):
    __slots__ = ("slices", "spacing_mm", "series_uid", "upload_bytes")
    SLICES_FIELD_NUMBER: _ClassVar[int]
    SPACING_MM_FIELD_NUMBER: _ClassVar[int]
    SERIES_UID_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    slices: int
    spacing_mm: _containers.RepeatedScalarFieldContainer[float]
    series_uid: str
    upload_bytes: int
    def __init__(self, slices: _Optional[int] = ..., spacing_mm: _Optional[_Iterable[float]] = ..., series_uid: _Optional[str] = ..., upload_bytes: _Optional[int] = ...) -> None: ...

class DiagnoseResponse(_message.Message):
    __slots__ = ("probabilities", "predicted_class", "covid_probability", "model_version", "card", "heatmap", "samples", "study", "sample_probabilities")
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    COVID_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    probabilities: _containers.RepeatedCompositeFieldContainer[ClassProbability]
    predicted_class: str
    covid_probability: float
    model_version: str
    card: ModelCardSummary
    heatmap: Heatmap
    samples: int
    study: StudySummary
    sample_probabilities: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, probabilities: _Optional[_Iterable[_Union[ClassProbability, _Mapping]]] = ..., predicted_class: _Optional[str] = ..., covid_probability: _Optional[float] = ..., model_version: _Optional[str] = ..., card: _Optional[_Union[ModelCardSummary, _Mapping]] = ..., heatmap: _Optional[_Union[Heatmap, _Mapping]] = ..., samples: _Optional[int] = ..., study: _Optional[_Union[StudySummary, _Mapping]] = ..., sample_probabilities: _Optional[_Iterable[float]] = ...) -> None: ...
