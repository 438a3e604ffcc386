"""Servers close idle connections (issue 25): 1,000 connected sites each kept about 1.5 MB of
transport buffers resident in the crypto service; a closed connection is reopened by the
client's next call, transparently."""

from __future__ import annotations

import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ucadi.ops.serving import serve


def test_an_idle_connection_is_closed_and_the_next_call_reconnects() -> None:
    running = serve(lambda server: None, service_names=[], tls=None, metrics_address=None,
                    connection_idle_s=0.3)
    states: list[grpc.ChannelConnectivity] = []
    changed = threading.Event()

    def record(state: grpc.ChannelConnectivity) -> None:
        states.append(state)
        changed.set()
    channel = grpc.insecure_channel(running.target)
    try:
        channel.subscribe(record)
        check = health_pb2_grpc.HealthStub(channel).Check
        assert check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
        def after_ready() -> list[grpc.ChannelConnectivity]:
            # Connectivity callbacks arrive on gRPC's own thread, possibly after the call
            # returned: READY itself may not be recorded yet.
            ready = grpc.ChannelConnectivity.READY
            return states[states.index(ready):] if ready in states else []

        deadline = time.monotonic() + 10
        while grpc.ChannelConnectivity.IDLE not in after_ready() \
                and time.monotonic() < deadline:
            changed.wait(0.2)
            changed.clear()
        seen = after_ready()
        assert grpc.ChannelConnectivity.IDLE in seen, states  # the server closed it
        assert check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING  # and the next call reconnects
    finally:
        channel.close()
        running.stop()
