"""Payloads (ciphertexts, safetensors models) <-> chunked protobuf streams with a digest."""

from ucadi.wire.chunks import (
    DEFAULT_CHUNK_BYTES,
    MAX_CHUNK_BYTES,
    ChunkReceiver,
    TransferError,
    file_digest,
    iter_file_chunks,
    iter_payload_chunks,
    receive_to_file,
)

__all__ = [
    "DEFAULT_CHUNK_BYTES", "MAX_CHUNK_BYTES", "ChunkReceiver", "TransferError", "file_digest",
    "iter_file_chunks", "iter_payload_chunks", "receive_to_file",
]
