"""The fuzzed federation's sites, and the stream cases made from a valid transfer by breaking
one thing each: digests, sizes, chunk order, oversized chunks, headers, a flipped bit, another
round's ciphertext. Every case here must be refused.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.trainer.cipher import SiteCipher
from ucadi.demo.federation import LocalFederation
from ucadi.learn.server_opt import announced_optimization
from ucadi.lwe.keywrap import generate_site_key_pair
from ucadi.model.layout import ParameterLayout, initial_model
from ucadi.ops.tls import secure_channel
from ucadi.v1 import common_pb2, crypto_pb2, federation_pb2, federation_pb2_grpc, inference_pb2
from ucadi.wire import iter_payload_chunks
from ucadi.wire.chunks import MAX_CHUNK_BYTES
from ucadi.wire.crypto_client import KeyClient

# Chunks small enough that a ciphertext travels in several (order, gaps and overlaps matter).
CASE_CHUNK_BYTES = 64 << 10


@dataclass
class StreamCase:
    """A client stream sent to one RPC by one caller; it must be refused."""

    label: str
    rpc: str
    caller: str
    messages: list[Any] = field(default_factory=list)


class FuzzSite:
    """A site with a real certificate and key whose updates are made by hand (no training):
    the initial model plus `offset`, weighted by `weight`, so the FedAvg of a round is known."""

    def __init__(self, federation: LocalFederation, name: str, weight: int,
                 offset: float) -> None:
        self.federation = federation
        self.name = name
        self.weight = weight
        channel = secure_channel(federation.processes["crypto"].target, federation.tls(name))
        public_pem = generate_site_key_pair().public_pem()
        KeyClient(channel).register_site_key(public_pem)
        channel.close()
        federation.pin_site(name, public_pem)  # the custodian wraps only for pinned keys
        self.channel = secure_channel(federation.processes["aggregator"].target,
                                      federation.tls(name))
        self.stub = federation_pb2_grpc.FederationServiceStub(self.channel)
        self.joined: Any = None
        self.vector: np.ndarray | None = None
        self.offset = offset

    def join(self) -> None:
        """Join the federation (after the custodian approved this site)."""
        self.joined = self.stub.Join(federation_pb2.JoinRequest(train_cases=self.weight),
                                     timeout=30)
        spec = self.joined.model
        model = initial_model(spec.arch, spec.preset, 2, spec.init_seed)
        state = model.state_dict()
        self.vector = ParameterLayout.of(state).flatten(state) + np.float32(self.offset)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def ciphertext(self, round_number: int, scratch: Path) -> bytes:
        """A valid encrypted update of this site for `round_number`."""
        path = scratch / f"{self.name}-{round_number}.lwe"
        SiteCipher(self.federation.secret).encrypt_to_file(
            self.vector, weight=self.weight, round_number=round_number,
            layout_hash=self.joined.model.layout_hash, path=path, site=self.name)
        payload = path.read_bytes()
        path.unlink()
        return payload

    def header(self, payload: bytes, **fields: Any) -> federation_pb2.UpdateHeader:
        """The upload header of `payload` for round 1 from version 0 unless `fields` say so."""
        secret = self.federation.secret
        values: dict[str, Any] = dict(
            round=1, base_version=0, parameter_set=secret.params.name, key_id=secret.key_id_hex,
            layout_hash=self.joined.model.layout_hash, num_samples=self.weight, local_epochs=1,
            optimizer_digest=announced_optimization(self.joined.model.optimizer_json).digest,
            total_size=len(payload), sha256=hashlib.sha256(payload).hexdigest())
        values.update(fields)
        return federation_pb2.UpdateHeader(**values)


def chunks(payload: bytes, **overrides: Any) -> list[common_pb2.Chunk]:
    """The payload's chunks, with `overrides` (e.g. sha256=...) set on every one."""
    made = list(iter_payload_chunks(payload, CASE_CHUNK_BYTES))
    for chunk in made:
        for name, value in overrides.items():
            setattr(chunk, name, value)
    return made


def broken_chunk_streams(payload: bytes) -> dict[str, list[common_pb2.Chunk]]:
    """The payload's chunk stream broken in each way a receiver must notice."""
    good = chunks(payload)
    digest = hashlib.sha256(payload).hexdigest()
    extra = common_pb2.Chunk(offset=len(payload), data=b"x", total_size=len(payload),
                             sha256=digest)
    big = b"\x00" * (MAX_CHUNK_BYTES + 1)
    return {
        "chunk digest wrong": chunks(payload, sha256=hashlib.sha256(b"other").hexdigest()),
        "chunks out of order": [good[1], good[0], *good[2:]],
        "a gap": [good[0], *good[2:]],
        "an overlap": [good[0], good[1], good[0], *good[2:]],
        "a chunk past total_size": [*good, extra],
        "the last chunk missing": good[:-1],
        "total_size changed midway": [good[0], *chunks(payload, total_size=len(payload) + 1)[1:]],
        "an oversized chunk": [common_pb2.Chunk(offset=0, data=big, total_size=len(big),
                                                sha256=hashlib.sha256(big).hexdigest())],
    }


def flipped(payload: bytes, position: int) -> bytes:
    """The payload with one bit flipped at `position`."""
    damaged = bytearray(payload)
    damaged[position] ^= 0x10
    return bytes(damaged)


def upload_cases(site: FuzzSite, scratch: Path) -> list[StreamCase]:
    """UploadUpdate streams from `site`, each broken in one way."""
    payload = site.ciphertext(1, scratch)
    other_round = site.ciphertext(2, scratch)
    message = federation_pb2.UploadUpdateRequest

    def stream(header: Any, parts: list[common_pb2.Chunk]) -> list[Any]:
        return [message(header=header), *(message(chunk=c) for c in parts)]
    header = site.header(payload)
    cases = [StreamCase(f"UploadUpdate: {label}", "UploadUpdate", site.name,
                        stream(header, parts))
             for label, parts in broken_chunk_streams(payload).items()]
    bit_flip = flipped(payload, len(payload) // 2)
    wrong_fields: dict[str, dict[str, Any]] = {
        "header digest wrong": {"sha256": hashlib.sha256(b"x").hexdigest()},
        "header total_size wrong": {"total_size": len(payload) + 1},
        "total_size 2**64-1": {"total_size": 2**64 - 1},
        "num_samples 2**64-1": {"num_samples": 2**64 - 1},
        "local_epochs 0": {"local_epochs": 0},
        "round 2": {"round": 2}, "round 0": {"round": 0},
        "base version 1": {"base_version": 1},
        "another key id": {"key_id": "0" * 32}, "another parameter set": {"parameter_set": "x"},
        "another layout": {"layout_hash": "f" * 64},
        "another optimizer": {"optimizer_digest": "0" * 64},
    }
    cases += [StreamCase(f"UploadUpdate: {label}", "UploadUpdate", site.name,
                         stream(site.header(payload, **values), chunks(payload)))
              for label, values in wrong_fields.items()]
    cases += [
        StreamCase("UploadUpdate: one bit flipped, digest recomputed", "UploadUpdate",
                   site.name, stream(site.header(bit_flip), chunks(bit_flip))),
        StreamCase("UploadUpdate: round 2's ciphertext under a round-1 header", "UploadUpdate",
                   site.name, stream(site.header(other_round), chunks(other_round))),
        StreamCase("UploadUpdate: header twice", "UploadUpdate", site.name,
                   [message(header=header), *stream(header, chunks(payload))]),
        StreamCase("UploadUpdate: chunks without a header", "UploadUpdate", site.name,
                   [message(chunk=c) for c in chunks(payload)]),
        StreamCase("UploadUpdate: contributed, with chunks", "UploadUpdate", site.name,
                   stream(site.header(payload, contributed=True), chunks(payload))),
        StreamCase("UploadUpdate: contributed, not at the sum service", "UploadUpdate",
                   site.name, [message(header=site.header(payload, contributed=True))]),
        StreamCase("UploadUpdate: an empty stream", "UploadUpdate", site.name, []),
    ]
    return cases


def contribution_cases(site: FuzzSite, other: str, scratch: Path) -> list[StreamCase]:
    """AddContribution streams from `site` for round 1, each broken in one way."""
    payload = site.ciphertext(1, scratch)
    federation = site.federation.plan.federation_id
    message = crypto_pb2.ContributionMessage

    def stream(parts: list[common_pb2.Chunk], **meta: Any) -> list[Any]:
        values = dict(federation=federation, round=1, site=site.name) | meta
        return [message(metadata=crypto_pb2.ContributionMetadata(**values)),
                *(message(chunk=c) for c in parts), message(commit=True)]
    cases = [StreamCase(f"AddContribution: {label}", "AddContribution", site.name,
                        stream(parts))
             for label, parts in broken_chunk_streams(payload).items()]
    garbage = np.random.default_rng(1).bytes(len(payload))
    bit_flip = flipped(payload, len(payload) // 2)
    other_round = site.ciphertext(2, scratch)
    cases += [StreamCase(f"AddContribution: {label}", "AddContribution", site.name, messages)
              for label, messages in (
        ("another site's name", stream(chunks(payload), site=other)),
        ("random bytes, digest right", stream(chunks(garbage))),
        ("one bit flipped, digest recomputed", stream(chunks(bit_flip))),
        ("round 2's ciphertext for round 1", stream(chunks(other_round))),
        ("a round not open", stream(chunks(payload), round=7)),
        ("another federation", stream(chunks(payload), federation="elsewhere")),
        ("metadata twice", [*stream([])[:1], *stream(chunks(payload))]),
        ("no commit message", stream(chunks(payload))[:-1]),
        ("commit false", [*stream(chunks(payload))[:-1], message(commit=False)]),
        ("chunks after the commit", [*stream(chunks(payload)), *stream(chunks(payload))[1:]]),
        ("chunks without metadata", [message(chunk=c) for c in chunks(payload)]),
    )]
    return cases


def diagnose_cases(caller: str) -> list[StreamCase]:
    """Diagnose streams (the study's files as chunks), each broken in one way."""
    request = inference_pb2.DiagnoseRequest
    formats = inference_pb2.StudyFormat
    options = request(options=inference_pb2.DiagnoseOptions(samples=1))
    body = np.random.default_rng(2).bytes(200_000)

    def files(name: str, parts: list[common_pb2.Chunk]) -> list[Any]:
        return [request(file=inference_pb2.StudyFileChunk(name=name, chunk=c)) for c in parts]
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("IM0001.dcm", b"\x00" * (64 << 20))
    zipped = request(options=inference_pb2.DiagnoseOptions(format=formats.STUDY_FORMAT_ZIP))
    interleaved = files("a.dcm", chunks(body)) + files("b.dcm", chunks(body))
    interleaved[1], interleaved[len(interleaved) // 2] = (interleaved[len(interleaved) // 2],
                                                          interleaved[1])
    cases: dict[str, list[Any]] = {
        f"file with {label}": [options, *files("IM0001.dcm", parts)]
        for label, parts in broken_chunk_streams(body).items()}
    cases |= {
        "no options first": files("IM0001.dcm", chunks(body)),
        "options twice": [options, options, *files("IM0001.dcm", chunks(body))],
        "a name with ..": [options, *files("../../etc/passwd", chunks(body))],
        "an absolute name": [options, *files("/etc/passwd", chunks(body))],
        "an empty name": [options, *files("", chunks(body))],
        "a 70,000-character name": [options, *files("x" * 70_000, chunks(body))],
        "a name with a NUL": [options, *files("IM\x000001.dcm", chunks(body))],
        "a file and a folder of one name": [options, *files("a", chunks(body)),
                                            *files("a/IM0001.dcm", chunks(body))],
        "two files interleaved": [options, *interleaved],
        "5000 one-byte files": [options, *(m for i in range(5000)
                                           for m in files(f"f{i}", chunks(b"x")))],
        "a zip bomb (64 MiB of zeros)": [zipped, *files("study.zip", chunks(bomb.getvalue()))],
        "a NIfTI that is not one": [request(options=inference_pb2.DiagnoseOptions(
            format=formats.STUDY_FORMAT_NIFTI)), *files("ct.nii.gz", chunks(body))],
        "random bytes as DICOM": [options, *files("IM0001.dcm", chunks(body))],
        "no files": [options],
    }
    return [StreamCase(f"Diagnose: {label}", "Diagnose", caller, messages)
            for label, messages in cases.items()]

