from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class TrainerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrainerStatus(_message.Message):
    __slots__ = ("site", "phase", "round", "published_version", "train_cases", "val_auc", "val_sensitivity", "val_specificity", "last_error", "device")
    SITE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAIN_CASES_FIELD_NUMBER: _ClassVar[int]
    VAL_AUC_FIELD_NUMBER: _ClassVar[int]
    VAL_SENSITIVITY_FIELD_NUMBER: _ClassVar[int]
    VAL_SPECIFICITY_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    site: str
    phase: str
    round: int
    published_version: int
    train_cases: int
    val_auc: float
    val_sensitivity: float
    val_specificity: float
    last_error: str
    device: str
    def __init__(self, site: _Optional[str] = ..., phase: _Optional[str] = ..., round: _Optional[int] = ..., published_version: _Optional[int] = ..., train_cases: _Optional[int] = ..., val_auc: _Optional[float] = ..., val_sensitivity: _Optional[float] = ..., val_specificity: _Optional[float] = ..., last_error: _Optional[str] = ..., device: _Optional[str] = ...) -> None: ...

class RequestLeaveRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class RequestLeaveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
