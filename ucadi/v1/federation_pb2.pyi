from ucadi.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoundState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUND_STATE_UNSPECIFIED: _ClassVar[RoundState]
    ROUND_STATE_COLLECTING: _ClassVar[RoundState]
    ROUND_STATE_SEALING: _ClassVar[RoundState]
    ROUND_STATE_COMPLETED: _ClassVar[RoundState]
    ROUND_STATE_SEALED: _ClassVar[RoundState]
    ROUND_STATE_UNMASKING: _ClassVar[RoundState]
ROUND_STATE_UNSPECIFIED: RoundState
ROUND_STATE_COLLECTING: RoundState
ROUND_STATE_SEALING: RoundState
ROUND_STATE_COMPLETED: RoundState
ROUND_STATE_SEALED: RoundState
ROUND_STATE_UNMASKING: RoundState

class RoundKeys(_message.Message):
    __slots__ = ("site", "share_public", "mask_public", "identity")
    SITE_FIELD_NUMBER: _ClassVar[int]
    SHARE_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    MASK_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    site: str
    share_public: bytes
    mask_public: bytes
    identity: bytes
    def __init__(self, site: _Optional[str] = ..., share_public: _Optional[bytes] = ..., mask_public: _Optional[bytes] = ..., identity: _Optional[bytes] = ...) -> None: ...

class ExchangeMaskKeysRequest(_message.Message):
    __slots__ = ("round", "keys", "wait_seconds")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    round: int
    keys: RoundKeys
    wait_seconds: float
    def __init__(self, round: _Optional[int] = ..., keys: _Optional[_Union[RoundKeys, _Mapping]] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class MaskKeys(_message.Message):
    __slots__ = ("round", "complete", "keys", "threshold", "neighbours")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    round: int
    complete: bool
    keys: _containers.RepeatedCompositeFieldContainer[RoundKeys]
    threshold: int
    neighbours: int
    def __init__(self, round: _Optional[int] = ..., complete: _Optional[bool] = ..., keys: _Optional[_Iterable[_Union[RoundKeys, _Mapping]]] = ..., threshold: _Optional[int] = ..., neighbours: _Optional[int] = ...) -> None: ...

class SealedSharePair(_message.Message):
    __slots__ = ("site", "sealed")
    SITE_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    site: str
    sealed: bytes
    def __init__(self, site: _Optional[str] = ..., sealed: _Optional[bytes] = ...) -> None: ...

class ExchangeMaskSharesRequest(_message.Message):
    __slots__ = ("round", "shares", "wait_seconds")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    round: int
    shares: _containers.RepeatedCompositeFieldContainer[SealedSharePair]
    wait_seconds: float
    def __init__(self, round: _Optional[int] = ..., shares: _Optional[_Iterable[_Union[SealedSharePair, _Mapping]]] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class MaskShares(_message.Message):
    __slots__ = ("round", "complete", "participants", "shares")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    round: int
    complete: bool
    participants: _containers.RepeatedScalarFieldContainer[str]
    shares: _containers.RepeatedCompositeFieldContainer[SealedSharePair]
    def __init__(self, round: _Optional[int] = ..., complete: _Optional[bool] = ..., participants: _Optional[_Iterable[str]] = ..., shares: _Optional[_Iterable[_Union[SealedSharePair, _Mapping]]] = ...) -> None: ...

class RevealedShare(_message.Message):
    __slots__ = ("owner", "share")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    share: bytes
    def __init__(self, owner: _Optional[str] = ..., share: _Optional[bytes] = ...) -> None: ...

class UnmaskingShares(_message.Message):
    __slots__ = ("round", "self_seeds", "mask_keys")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SELF_SEEDS_FIELD_NUMBER: _ClassVar[int]
    MASK_KEYS_FIELD_NUMBER: _ClassVar[int]
    round: int
    self_seeds: _containers.RepeatedCompositeFieldContainer[RevealedShare]
    mask_keys: _containers.RepeatedCompositeFieldContainer[RevealedShare]
    def __init__(self, round: _Optional[int] = ..., self_seeds: _Optional[_Iterable[_Union[RevealedShare, _Mapping]]] = ..., mask_keys: _Optional[_Iterable[_Union[RevealedShare, _Mapping]]] = ...) -> None: ...

class UnmaskingReceipt(_message.Message):
    __slots__ = ("round", "answers")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    round: int
    answers: int
    def __init__(self, round: _Optional[int] = ..., answers: _Optional[int] = ...) -> None: ...

class GetUnmaskingRequest(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class MaskTerm(_message.Message):
    __slots__ = ("seed", "sign")
    SEED_FIELD_NUMBER: _ClassVar[int]
    SIGN_FIELD_NUMBER: _ClassVar[int]
    seed: bytes
    sign: int
    def __init__(self, seed: _Optional[bytes] = ..., sign: _Optional[int] = ...) -> None: ...

class Unmasking(_message.Message):
    __slots__ = ("round", "terms")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    round: int
    terms: _containers.RepeatedCompositeFieldContainer[MaskTerm]
    def __init__(self, round: _Optional[int] = ..., terms: _Optional[_Iterable[_Union[MaskTerm, _Mapping]]] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("arch", "preset", "task", "init_seed", "recipe_json", "layout_hash", "value_count", "optimizer_json")
    ARCH_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    INIT_SEED_FIELD_NUMBER: _ClassVar[int]
    RECIPE_JSON_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_HASH_FIELD_NUMBER: _ClassVar[int]
    VALUE_COUNT_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_JSON_FIELD_NUMBER: _ClassVar[int]
    arch: str
    preset: str
    task: str
    init_seed: int
    recipe_json: str
    layout_hash: str
    value_count: int
    optimizer_json: str
    def __init__(self, arch: _Optional[str] = ..., preset: _Optional[str] = ..., task: _Optional[str] = ..., init_seed: _Optional[int] = ..., recipe_json: _Optional[str] = ..., layout_hash: _Optional[str] = ..., value_count: _Optional[int] = ..., optimizer_json: _Optional[str] = ...) -> None: ...

class EncryptionSpec(_message.Message):
    __slots__ = ("enabled", "parameter_set", "key_id")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_SET_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    parameter_set: str
    key_id: str
    def __init__(self, enabled: _Optional[bool] = ..., parameter_set: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("train_cases", "agent_version")
    TRAIN_CASES_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    train_cases: int
    agent_version: str
    def __init__(self, train_cases: _Optional[int] = ..., agent_version: _Optional[str] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("federation_id", "model", "encryption", "local_epochs", "total_rounds", "site", "contribute_to_sum", "weight_unit", "pairwise_masks")
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_FIELD_NUMBER: _ClassVar[int]
    LOCAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTE_TO_SUM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_UNIT_FIELD_NUMBER: _ClassVar[int]
    PAIRWISE_MASKS_FIELD_NUMBER: _ClassVar[int]
    federation_id: str
    model: ModelSpec
    encryption: EncryptionSpec
    local_epochs: int
    total_rounds: int
    site: str
    contribute_to_sum: bool
    weight_unit: int
    pairwise_masks: bool
    def __init__(self, federation_id: _Optional[str] = ..., model: _Optional[_Union[ModelSpec, _Mapping]] = ..., encryption: _Optional[_Union[EncryptionSpec, _Mapping]] = ..., local_epochs: _Optional[int] = ..., total_rounds: _Optional[int] = ..., site: _Optional[str] = ..., contribute_to_sum: _Optional[bool] = ..., weight_unit: _Optional[int] = ..., pairwise_masks: _Optional[bool] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class LeaveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRoundRequest(_message.Message):
    __slots__ = ("known_round", "known_state", "wait_seconds", "site_sets")
    KNOWN_ROUND_FIELD_NUMBER: _ClassVar[int]
    KNOWN_STATE_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SITE_SETS_FIELD_NUMBER: _ClassVar[int]
    known_round: int
    known_state: RoundState
    wait_seconds: float
    site_sets: SiteSetsWanted
    def __init__(self, known_round: _Optional[int] = ..., known_state: _Optional[_Union[RoundState, str]] = ..., wait_seconds: _Optional[float] = ..., site_sets: _Optional[_Union[SiteSetsWanted, _Mapping]] = ...) -> None: ...

class SiteSetsWanted(_message.Message):
    __slots__ = ("compact", "roster_digest")
    COMPACT_FIELD_NUMBER: _ClassVar[int]
    ROSTER_DIGEST_FIELD_NUMBER: _ClassVar[int]
    compact: bool
    roster_digest: bytes
    def __init__(self, compact: _Optional[bool] = ..., roster_digest: _Optional[bytes] = ...) -> None: ...

class SiteSet(_message.Message):
    __slots__ = ("roster_digest", "members")
    ROSTER_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    roster_digest: bytes
    members: bytes
    def __init__(self, roster_digest: _Optional[bytes] = ..., members: _Optional[bytes] = ...) -> None: ...

class Roster(_message.Message):
    __slots__ = ("digest", "sites")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    digest: bytes
    sites: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, digest: _Optional[bytes] = ..., sites: _Optional[_Iterable[str]] = ...) -> None: ...

class RoundInfo(_message.Message):
    __slots__ = ("round", "state", "base_version", "latest_version", "deadline_unix", "start_epoch", "local_epochs", "expected_sites", "uploaded_sites", "awaiting_caller", "min_sites", "optimizer_digest", "unmasking_survivors", "unmasking_dropped", "expected", "uploaded", "roster")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_FIELD_NUMBER: _ClassVar[int]
    START_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOCAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SITES_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_SITES_FIELD_NUMBER: _ClassVar[int]
    AWAITING_CALLER_FIELD_NUMBER: _ClassVar[int]
    MIN_SITES_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_DIGEST_FIELD_NUMBER: _ClassVar[int]
    UNMASKING_SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    UNMASKING_DROPPED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_FIELD_NUMBER: _ClassVar[int]
    ROSTER_FIELD_NUMBER: _ClassVar[int]
    round: int
    state: RoundState
    base_version: int
    latest_version: int
    deadline_unix: float
    start_epoch: int
    local_epochs: int
    expected_sites: _containers.RepeatedScalarFieldContainer[str]
    uploaded_sites: _containers.RepeatedScalarFieldContainer[str]
    awaiting_caller: bool
    min_sites: int
    optimizer_digest: str
    unmasking_survivors: _containers.RepeatedScalarFieldContainer[str]
    unmasking_dropped: _containers.RepeatedScalarFieldContainer[str]
    expected: SiteSet
    uploaded: SiteSet
    roster: Roster
    def __init__(self, round: _Optional[int] = ..., state: _Optional[_Union[RoundState, str]] = ..., base_version: _Optional[int] = ..., latest_version: _Optional[int] = ..., deadline_unix: _Optional[float] = ..., start_epoch: _Optional[int] = ..., local_epochs: _Optional[int] = ..., expected_sites: _Optional[_Iterable[str]] = ..., uploaded_sites: _Optional[_Iterable[str]] = ..., awaiting_caller: _Optional[bool] = ..., min_sites: _Optional[int] = ..., optimizer_digest: _Optional[str] = ..., unmasking_survivors: _Optional[_Iterable[str]] = ..., unmasking_dropped: _Optional[_Iterable[str]] = ..., expected: _Optional[_Union[SiteSet, _Mapping]] = ..., uploaded: _Optional[_Union[SiteSet, _Mapping]] = ..., roster: _Optional[_Union[Roster, _Mapping]] = ...) -> None: ...

class DownloadGlobalRequest(_message.Message):
    __slots__ = ("version", "offset")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    version: int
    offset: int
    def __init__(self, version: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class UpdateHeader(_message.Message):
    __slots__ = ("round", "base_version", "total_size", "sha256", "parameter_set", "key_id", "layout_hash", "num_samples", "local_epochs", "contributed", "optimizer_digest")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_SET_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_HASH_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOCAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTED_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_DIGEST_FIELD_NUMBER: _ClassVar[int]
    round: int
    base_version: int
    total_size: int
    sha256: str
    parameter_set: str
    key_id: str
    layout_hash: str
    num_samples: int
    local_epochs: int
    contributed: bool
    optimizer_digest: str
    def __init__(self, round: _Optional[int] = ..., base_version: _Optional[int] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ..., parameter_set: _Optional[str] = ..., key_id: _Optional[str] = ..., layout_hash: _Optional[str] = ..., num_samples: _Optional[int] = ..., local_epochs: _Optional[int] = ..., contributed: _Optional[bool] = ..., optimizer_digest: _Optional[str] = ...) -> None: ...

class UploadUpdateRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UpdateHeader
    chunk: _common_pb2.Chunk
    def __init__(self, header: _Optional[_Union[UpdateHeader, _Mapping]] = ..., chunk: _Optional[_Union[_common_pb2.Chunk, _Mapping]] = ...) -> None: ...

class UploadReceipt(_message.Message):
    __slots__ = ("round", "site", "stored_bytes", "sha256", "uploads_in_round")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    UPLOADS_IN_ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    site: str
    stored_bytes: int
    sha256: str
    uploads_in_round: int
    def __init__(self, round: _Optional[int] = ..., site: _Optional[str] = ..., stored_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., uploads_in_round: _Optional[int] = ...) -> None: ...

class GetUploadOffsetRequest(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class GetUploadOffsetResponse(_message.Message):
    __slots__ = ("offset",)
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    offset: int
    def __init__(self, offset: _Optional[int] = ...) -> None: ...

class SiteMetrics(_message.Message):
    __slots__ = ("version", "split", "cases", "auc", "sensitivity", "specificity")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    CASES_FIELD_NUMBER: _ClassVar[int]
    AUC_FIELD_NUMBER: _ClassVar[int]
    SENSITIVITY_FIELD_NUMBER: _ClassVar[int]
    SPECIFICITY_FIELD_NUMBER: _ClassVar[int]
    version: int
    split: str
    cases: int
    auc: float
    sensitivity: float
    specificity: float
    def __init__(self, version: _Optional[int] = ..., split: _Optional[str] = ..., cases: _Optional[int] = ..., auc: _Optional[float] = ..., sensitivity: _Optional[float] = ..., specificity: _Optional[float] = ...) -> None: ...

class ReportMetricsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("round", "site_sets")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SITE_SETS_FIELD_NUMBER: _ClassVar[int]
    round: int
    site_sets: SiteSetsWanted
    def __init__(self, round: _Optional[int] = ..., site_sets: _Optional[_Union[SiteSetsWanted, _Mapping]] = ...) -> None: ...

class SiteStatus(_message.Message):
    __slots__ = ("site", "state", "last_round", "last_seen_unix", "train_cases", "metrics")
    SITE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_ROUND_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_FIELD_NUMBER: _ClassVar[int]
    TRAIN_CASES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    site: str
    state: str
    last_round: int
    last_seen_unix: float
    train_cases: int
    metrics: SiteMetrics
    def __init__(self, site: _Optional[str] = ..., state: _Optional[str] = ..., last_round: _Optional[int] = ..., last_seen_unix: _Optional[float] = ..., train_cases: _Optional[int] = ..., metrics: _Optional[_Union[SiteMetrics, _Mapping]] = ...) -> None: ...

class RoundSummary(_message.Message):
    __slots__ = ("round", "state", "expected_sites", "uploaded_sites", "opened_unix", "sealed_unix", "bytes_in", "global_bytes", "sum_seconds", "expected", "uploaded")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SITES_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_SITES_FIELD_NUMBER: _ClassVar[int]
    OPENED_UNIX_FIELD_NUMBER: _ClassVar[int]
    SEALED_UNIX_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SUM_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_FIELD_NUMBER: _ClassVar[int]
    round: int
    state: RoundState
    expected_sites: _containers.RepeatedScalarFieldContainer[str]
    uploaded_sites: _containers.RepeatedScalarFieldContainer[str]
    opened_unix: float
    sealed_unix: float
    bytes_in: int
    global_bytes: int
    sum_seconds: float
    expected: SiteSet
    uploaded: SiteSet
    def __init__(self, round: _Optional[int] = ..., state: _Optional[_Union[RoundState, str]] = ..., expected_sites: _Optional[_Iterable[str]] = ..., uploaded_sites: _Optional[_Iterable[str]] = ..., opened_unix: _Optional[float] = ..., sealed_unix: _Optional[float] = ..., bytes_in: _Optional[int] = ..., global_bytes: _Optional[int] = ..., sum_seconds: _Optional[float] = ..., expected: _Optional[_Union[SiteSet, _Mapping]] = ..., uploaded: _Optional[_Union[SiteSet, _Mapping]] = ...) -> None: ...

class FederationStatus(_message.Message):
    __slots__ = ("federation_id", "current", "sites", "rounds", "total_rounds", "roster")
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    ROSTER_FIELD_NUMBER: _ClassVar[int]
    federation_id: str
    current: RoundInfo
    sites: _containers.RepeatedCompositeFieldContainer[SiteStatus]
    rounds: _containers.RepeatedCompositeFieldContainer[RoundSummary]
    total_rounds: int
    roster: Roster
    def __init__(self, federation_id: _Optional[str] = ..., current: _Optional[_Union[RoundInfo, _Mapping]] = ..., sites: _Optional[_Iterable[_Union[SiteStatus, _Mapping]]] = ..., rounds: _Optional[_Iterable[_Union[RoundSummary, _Mapping]]] = ..., total_rounds: _Optional[int] = ..., roster: _Optional[_Union[Roster, _Mapping]] = ...) -> None: ...
