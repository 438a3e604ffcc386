"""Prometheus metrics of the inference service (names shared with dashboards and alerts)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from prometheus_client import Counter, Gauge, Histogram

from services.inference.callers import REFUSED
from ucadi.errors import UcadiError
from ucadi.ops.serving import status_code

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

# Latency buckets in seconds: a cpu-small study answers in tens of milliseconds, a paper-size
# study with Grad-CAM on a CPU in tens of seconds.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Batch sizes counted in samplings (rows of the model input), up to a generous max batch.
BATCH_SIZE_BUCKETS = (1, 2, 4, 5, 8, 10, 16, 20, 32, 40, 64, 128)

REQUESTS = Counter("ucadi_inference_requests",
                   "Inference RPCs answered, by RPC and gRPC status code name",
                   ["rpc", "code"])
LATENCY = Histogram("ucadi_inference_latency_seconds",
                    "Time from receiving an inference RPC to answering it", ["rpc"],
                    buckets=LATENCY_BUCKETS_S)
BATCH_SIZE = Histogram("ucadi_inference_batch_size",
                       "Samplings (model input rows) per batch run by the dynamic batcher",
                       buckets=BATCH_SIZE_BUCKETS)
QUEUE_DEPTH = Gauge("ucadi_inference_queue_depth",
                    "Requests waiting in the dynamic batcher's queue")
MODEL_VERSION = Gauge("ucadi_inference_model_version",
                      "Global model version being served (numeric part of the card's version; "
                      "-1 while no model is loaded)")
MODEL_VERSION.set(-1)
# Callers are the site's configured clients (certificates, token subjects): a bounded set.
CALLER_REQUESTS = Counter("ucadi_inference_caller_requests",
                          "Inference RPCs by caller (certificate CN or token name), how it was "
                          "recognised (federation-ca, site-ca, token, plaintext, refused) and "
                          "gRPC status code name", ["caller", "via", "code"])


def observed(rpc: str) -> Callable[[F], F]:
    """Admit the caller, count and time an RPC by status code and caller; turn a UcadiError
    into its gRPC status. The servicer's `service.gate` admits callers (callers.py)."""
    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            caller = REFUSED
            try:
                caller = self.service.gate.admit(context)
                return method(self, request, context)
            except UcadiError as exc:
                code = status_code(exc).name
                context.abort(status_code(exc), str(exc))
            except Exception:
                code = grpc.StatusCode.INTERNAL.name
                log.exception("%s failed", rpc)
                context.abort(grpc.StatusCode.INTERNAL, f"{rpc} failed inside the server; "
                              "see the server log")
            finally:
                REQUESTS.labels(rpc=rpc, code=code).inc()
                CALLER_REQUESTS.labels(caller=caller.name, via=caller.via, code=code).inc()
                log.info("%s by %s (role %s, via %s): %s", rpc, caller.name, caller.role,
                         caller.via, code)
                LATENCY.labels(rpc=rpc).observe(time.perf_counter() - started)
        return wrapper  # type: ignore[return-value]
    return decorate
