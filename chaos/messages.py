"""Every RPC of every UCADI service, found from the protos, and random requests for them:
field values drawn from boundary values (0, -1, the integer limits, NaN, infinities, empty,
very long and path-like strings) and from the federation's real names, so random requests also
reach the code behind the checks that a purely random name would fail first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from grpc_health.v1 import health_pb2

from ucadi.v1 import crypto_pb2, federation_pb2, inference_pb2, open_inference_pb2, trainer_pb2

# Protos whose services the fuzzing covers, and gRPC's health service every server runs.
PROTO_MODULES = (federation_pb2, crypto_pb2, trainer_pb2, inference_pb2, open_inference_pb2,
                 health_pb2)
# Share of a message's fields left unset, and how deep nested messages are filled.
UNSET_SHARE = 0.35
MAX_DEPTH = 3
REPEATED_COUNTS = (0, 1, 2, 3, 17)
# Responses read from a server stream before the call is cancelled.
MAX_STREAMED_RESPONSES = 64

SIGNED_32 = (0, 1, -1, 2, 2**31 - 1, -2**31)
SIGNED_64 = (0, 1, -1, 2, 2**53, 2**63 - 1, -2**63)
UNSIGNED_32 = (0, 1, 2, 3, 2**31, 2**32 - 1)
UNSIGNED_64 = (0, 1, 2, 3, 2**32, 2**53 + 1, 2**63, 2**64 - 1)
FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, float("nan"), float("inf"), float("-inf"), 1e308, 5e-324,
          3.4e38)
STRINGS = ("", "a", " ", "../../../../etc/passwd", "/abs/path", "\x00", "x" * 70_000, "ü名前",
           "1.2.3", "-1", "NaN", "%s%n", "site-a\x00site-b")
BYTES = (b"", b"\x00", b"\x01", b"\xff" * 32, b"-----BEGIN PUBLIC KEY-----\nAAAA\n")


@dataclass(frozen=True)
class Rpc:
    """One RPC: its service, name, path and request/response classes."""

    service: str
    name: str
    path: str
    request: type
    response: type
    client_streaming: bool
    server_streaming: bool

    def __str__(self) -> str:
        return f"{self.service.rsplit('.', 1)[-1]}.{self.name}"


def all_rpcs() -> list[Rpc]:
    """Every method of every service in PROTO_MODULES."""
    rpcs = []
    for module in PROTO_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            rpcs += [_rpc(service.full_name, method) for method in service.methods]
    return rpcs


def _rpc(service: str, method: MethodDescriptor) -> Rpc:
    return Rpc(service, method.name, f"/{service}/{method.name}",
               message_factory.GetMessageClass(method.input_type),
               message_factory.GetMessageClass(method.output_type),
               method.client_streaming, method.server_streaming)


class ValuePool:
    """Where random field values come from: boundaries, plus the federation's real names."""

    def __init__(self, real_strings: tuple[str, ...], real_numbers: tuple[int, ...]) -> None:
        self.strings = STRINGS + real_strings
        self.numbers = real_numbers

    def value(self, field: FieldDescriptor, rng: np.random.Generator, depth: int) -> Any:
        """A random value for one (non-repeated) field."""
        kind = field.type
        if kind == FieldDescriptor.TYPE_MESSAGE:
            return random_message(message_factory.GetMessageClass(field.message_type), rng,
                                  self, depth + 1)
        if kind == FieldDescriptor.TYPE_ENUM:
            known = [v.number for v in field.enum_type.values]
            return int(rng.choice(known + [99, -1]))
        if kind == FieldDescriptor.TYPE_BOOL:
            return bool(rng.random() < 0.5)
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return float(rng.choice(FLOATS)) if rng.random() < 0.7 else float(rng.normal())
        if kind == FieldDescriptor.TYPE_STRING:
            return str(rng.choice(self.strings))
        if kind == FieldDescriptor.TYPE_BYTES:
            if rng.random() < 0.5:
                return BYTES[int(rng.integers(0, len(BYTES)))]
            return rng.bytes(int(rng.choice([1, 7, 64, 4096, 300_000])))
        limits = {FieldDescriptor.TYPE_UINT32: UNSIGNED_32, FieldDescriptor.TYPE_FIXED32:
                  UNSIGNED_32, FieldDescriptor.TYPE_UINT64: UNSIGNED_64,
                  FieldDescriptor.TYPE_FIXED64: UNSIGNED_64, FieldDescriptor.TYPE_INT64:
                  SIGNED_64, FieldDescriptor.TYPE_SINT64: SIGNED_64,
                  FieldDescriptor.TYPE_SFIXED64: SIGNED_64}.get(kind, SIGNED_32)
        usable = [n for n in self.numbers if min(limits) <= n <= max(limits)]
        choices = limits + tuple(usable) * 2
        return int(choices[int(rng.integers(0, len(choices)))])


def random_message(message_class: type, rng: np.random.Generator, pool: ValuePool,
                   depth: int = 0) -> Any:
    """A message with a random subset of its fields set to random or boundary values."""
    message = message_class()
    descriptor: Descriptor = message.DESCRIPTOR
    if depth >= MAX_DEPTH:
        return message
    for field in descriptor.fields:
        if rng.random() < UNSET_SHARE:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _fill_map(getattr(message, field.name), field.message_type, rng, pool, depth)
        elif field.is_repeated:
            count = int(rng.choice(REPEATED_COUNTS))
            values = [pool.value(field, rng, depth) for _ in range(count)]
            target = getattr(message, field.name)
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for value in values:
                    target.add().CopyFrom(value)
            else:
                target.extend(values)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(message, field.name).CopyFrom(pool.value(field, rng, depth))
        else:
            setattr(message, field.name, pool.value(field, rng, depth))
    return message


def _fill_map(target: Any, entry: Descriptor, rng: np.random.Generator, pool: ValuePool,
              depth: int) -> None:
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    for _ in range(int(rng.choice(REPEATED_COUNTS))):
        key = pool.value(key_field, rng, depth)
        value = pool.value(value_field, rng, depth)
        if value_field.type == FieldDescriptor.TYPE_MESSAGE:
            target[key].CopyFrom(value)
        else:
            target[key] = value


def call(channel: grpc.Channel, rpc: Rpc, request: Any, timeout: float) -> tuple[grpc.StatusCode,
                                                                                  str]:
    """Call `rpc` with `request` (a message, or an iterable of them for a client stream) and
    read a streamed answer; (status code, details)."""
    kind = {(False, False): channel.unary_unary, (True, False): channel.stream_unary,
            (False, True): channel.unary_stream, (True, True): channel.stream_stream}[
        (rpc.client_streaming, rpc.server_streaming)]
    method = kind(rpc.path, request_serializer=_serialize,
                  response_deserializer=rpc.response.FromString)
    try:
        answer = method(iter(request) if rpc.client_streaming else request, timeout=timeout)
        if rpc.server_streaming:
            for count, _ in enumerate(answer):
                if count >= MAX_STREAMED_RESPONSES:
                    answer.cancel()
                    break
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()


def requests_for(rpc: Rpc, rng: np.random.Generator, pool: ValuePool) -> Any:
    """One random request: a message, or a short list of them for a client stream."""
    if not rpc.client_streaming:
        return random_message(rpc.request, rng, pool)
    return [random_message(rpc.request, rng, pool)
            for _ in range(int(rng.choice([0, 1, 2, 3, 5])))]

