from ucadi.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterSiteKeyRequest(_message.Message):
    __slots__ = ("public_key_pem",)
    PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    public_key_pem: bytes
    def __init__(self, public_key_pem: _Optional[bytes] = ...) -> None: ...

class ApproveSiteKeyRequest(_message.Message):
    __slots__ = ("site", "fingerprint")
    SITE_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    site: str
    fingerprint: str
    def __init__(self, site: _Optional[str] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class ApproveSiteKeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegisterSiteKeyResponse(_message.Message):
    __slots__ = ("site", "fingerprint")
    SITE_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    site: str
    fingerprint: str
    def __init__(self, site: _Optional[str] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class ListSiteKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SiteKey(_message.Message):
    __slots__ = ("site", "public_key_pem", "fingerprint", "registered_at")
    SITE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    site: str
    public_key_pem: bytes
    fingerprint: str
    registered_at: float
    def __init__(self, site: _Optional[str] = ..., public_key_pem: _Optional[bytes] = ..., fingerprint: _Optional[str] = ..., registered_at: _Optional[float] = ...) -> None: ...

class ListSiteKeysResponse(_message.Message):
    __slots__ = ("sites",)
    SITES_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedCompositeFieldContainer[SiteKey]
    def __init__(self, sites: _Optional[_Iterable[_Union[SiteKey, _Mapping]]] = ...) -> None: ...

class WrappedBlob(_message.Message):
    __slots__ = ("site", "blob")
    SITE_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    site: str
    blob: bytes
    def __init__(self, site: _Optional[str] = ..., blob: _Optional[bytes] = ...) -> None: ...

class PutWrappedKeysRequest(_message.Message):
    __slots__ = ("key_id", "parameter_set", "blobs", "activate")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_SET_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    parameter_set: str
    blobs: _containers.RepeatedCompositeFieldContainer[WrappedBlob]
    activate: bool
    def __init__(self, key_id: _Optional[str] = ..., parameter_set: _Optional[str] = ..., blobs: _Optional[_Iterable[_Union[WrappedBlob, _Mapping]]] = ..., activate: _Optional[bool] = ...) -> None: ...

class PutWrappedKeysResponse(_message.Message):
    __slots__ = ("stored", "active_key_id")
    STORED_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    stored: int
    active_key_id: str
    def __init__(self, stored: _Optional[int] = ..., active_key_id: _Optional[str] = ...) -> None: ...

class GetWrappedKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class WrappedKey(_message.Message):
    __slots__ = ("key_id", "parameter_set", "blob")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_SET_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    parameter_set: str
    blob: bytes
    def __init__(self, key_id: _Optional[str] = ..., parameter_set: _Optional[str] = ..., blob: _Optional[bytes] = ...) -> None: ...

class GetActiveKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ActiveKey(_message.Message):
    __slots__ = ("key_id", "parameter_set")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_SET_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    parameter_set: str
    def __init__(self, key_id: _Optional[str] = ..., parameter_set: _Optional[str] = ...) -> None: ...

class GetSiteApprovalRequest(_message.Message):
    __slots__ = ("site", "key_id")
    SITE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    site: str
    key_id: str
    def __init__(self, site: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class SiteApproval(_message.Message):
    __slots__ = ("site", "key_id", "approved")
    SITE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    site: str
    key_id: str
    approved: bool
    def __init__(self, site: _Optional[str] = ..., key_id: _Optional[str] = ..., approved: _Optional[bool] = ...) -> None: ...

class OpenRoundRequest(_message.Message):
    __slots__ = ("federation", "round", "key_id", "parameter_set", "layout_hash", "slot_count", "block_start", "block_stop")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_SET_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_HASH_FIELD_NUMBER: _ClassVar[int]
    SLOT_COUNT_FIELD_NUMBER: _ClassVar[int]
    BLOCK_START_FIELD_NUMBER: _ClassVar[int]
    BLOCK_STOP_FIELD_NUMBER: _ClassVar[int]
    federation: str
    round: int
    key_id: str
    parameter_set: str
    layout_hash: bytes
    slot_count: int
    block_start: int
    block_stop: int
    def __init__(self, federation: _Optional[str] = ..., round: _Optional[int] = ..., key_id: _Optional[str] = ..., parameter_set: _Optional[str] = ..., layout_hash: _Optional[bytes] = ..., slot_count: _Optional[int] = ..., block_start: _Optional[int] = ..., block_stop: _Optional[int] = ...) -> None: ...

class ContributionMetadata(_message.Message):
    __slots__ = ("federation", "round", "site", "sha256")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    federation: str
    round: int
    site: str
    sha256: str
    def __init__(self, federation: _Optional[str] = ..., round: _Optional[int] = ..., site: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class ContributionMessage(_message.Message):
    __slots__ = ("metadata", "chunk", "commit")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    metadata: ContributionMetadata
    chunk: _common_pb2.Chunk
    commit: bool
    def __init__(self, metadata: _Optional[_Union[ContributionMetadata, _Mapping]] = ..., chunk: _Optional[_Union[_common_pb2.Chunk, _Mapping]] = ..., commit: _Optional[bool] = ...) -> None: ...

class ContributionReceipt(_message.Message):
    __slots__ = ("federation", "round", "site", "contributions", "sha256")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    federation: str
    round: int
    site: str
    contributions: int
    sha256: str
    def __init__(self, federation: _Optional[str] = ..., round: _Optional[int] = ..., site: _Optional[str] = ..., contributions: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class SealRoundRequest(_message.Message):
    __slots__ = ("federation", "round", "chunk_bytes", "sites")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    federation: str
    round: int
    chunk_bytes: int
    sites: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, federation: _Optional[str] = ..., round: _Optional[int] = ..., chunk_bytes: _Optional[int] = ..., sites: _Optional[_Iterable[str]] = ...) -> None: ...

class SealedRound(_message.Message):
    __slots__ = ("federation", "round", "sites", "sum_bytes", "sha256")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    SUM_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    federation: str
    round: int
    sites: _containers.RepeatedScalarFieldContainer[str]
    sum_bytes: int
    sha256: str
    def __init__(self, federation: _Optional[str] = ..., round: _Optional[int] = ..., sites: _Optional[_Iterable[str]] = ..., sum_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class FetchSumRequest(_message.Message):
    __slots__ = ("federation", "round", "offset", "chunk_bytes")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    federation: str
    round: int
    offset: int
    chunk_bytes: int
    def __init__(self, federation: _Optional[str] = ..., round: _Optional[int] = ..., offset: _Optional[int] = ..., chunk_bytes: _Optional[int] = ...) -> None: ...

class GetRoundStatusRequest(_message.Message):
    __slots__ = ("federation", "round", "site")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    federation: str
    round: int
    site: str
    def __init__(self, federation: _Optional[str] = ..., round: _Optional[int] = ..., site: _Optional[str] = ...) -> None: ...

class RoundStatus(_message.Message):
    __slots__ = ("federation", "round", "state", "sites", "key_id", "parameter_set", "layout_hash", "slot_count", "block_start", "block_stop", "sum_bytes", "sha256")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_SET_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_HASH_FIELD_NUMBER: _ClassVar[int]
    SLOT_COUNT_FIELD_NUMBER: _ClassVar[int]
    BLOCK_START_FIELD_NUMBER: _ClassVar[int]
    BLOCK_STOP_FIELD_NUMBER: _ClassVar[int]
    SUM_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    federation: str
    round: int
    state: str
    sites: _containers.RepeatedScalarFieldContainer[str]
    key_id: str
    parameter_set: str
    layout_hash: bytes
    slot_count: int
    block_start: int
    block_stop: int
    sum_bytes: int
    sha256: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, federation: _Optional[str] = ..., round: _Optional[int] = ..., state: _Optional[str] = ..., sites: _Optional[_Iterable[str]] = ..., key_id: _Optional[str] = ..., parameter_set: _Optional[str] = ..., layout_hash: _Optional[bytes] = ..., slot_count: _Optional[int] = ..., block_start: _Optional[int] = ..., block_stop: _Optional[int] = ..., sum_bytes: _Optional[int] = ..., sha256: _Optional[_Iterable[str]] = ...) -> None: ...
