"""Prometheus metrics of the crypto service (names fixed by the project's conventions)."""

from prometheus_client import Counter, Gauge, Histogram

SUM_SECONDS = Histogram(
    "ucadi_sum_seconds",
    "Seconds to verify and add one contribution to its round's sum, from its last byte",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
SUM_CONTRIBUTIONS = Counter(
    "ucadi_sum_contributions_total", "Contributions offered to the sum service, by outcome",
    ["outcome"])
SUM_BYTES = Counter("ucadi_sum_bytes_total", "Bytes of accepted ciphertext contributions")
KEY_REGISTRATIONS = Counter("ucadi_key_registrations_total",
                            "Site public keys registered (or replaced)")
WRAPPED_KEYS_STORED = Gauge("ucadi_wrapped_keys_stored",
                            "Wrapped secret blobs held by the key service")
SUM_FETCHED_BYTES = Counter("ucadi_sum_fetched_bytes_total",
                            "Bytes of sealed sums streamed by FetchSum (sites, aggregator)")
