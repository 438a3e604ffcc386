"""OpenTelemetry tracing: OTLP export when configured, otherwise spans stay in-process.

Set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://otel-collector:4317) to export; tests install an
in-memory exporter with `use_span_exporter`. gRPC calls are traced by interceptors on both sides
so one trace spans a site's upload, the aggregator and the crypto service.
"""

from __future__ import annotations

import os
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import client_interceptor, server_interceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

_provider: TracerProvider | None = None


def setup_tracing(service_name: str) -> TracerProvider:
    """Install the process-wide tracer provider for `service_name` (idempotent)."""
    global _provider
    if _provider is not None:
        return _provider
    _provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    return _provider


def use_span_exporter(exporter: SpanExporter, service_name: str = "ucadi") -> None:
    """Send every finished span to `exporter` synchronously (tests: InMemorySpanExporter)."""
    setup_tracing(service_name).add_span_processor(SimpleSpanProcessor(exporter))


def tracer(name: str) -> trace.Tracer:
    """A tracer for manual spans (round, upload, sum, seal)."""
    return trace.get_tracer(name)


def server_interceptors() -> list[Any]:
    """Server-side interceptors: a span per incoming RPC, continuing the caller's trace."""
    return [server_interceptor()]


def traced_channel(channel: grpc.Channel) -> grpc.Channel:
    """Wrap a channel so outgoing RPCs carry the current trace context."""
    return intercept_channel(channel, client_interceptor())
