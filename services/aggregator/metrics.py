"""Prometheus metrics of the aggregator (round progress, traffic, rejections, site metrics)."""

from prometheus_client import Counter, Gauge, Histogram

from services.aggregator.contracts import RoundState

ROUND_STATES = tuple(state.value for state in RoundState)

ROUND_NUMBER = Gauge("ucadi_round_number", "Current federation round (from 1)", ["federation"])
ROUND_STATE = Gauge("ucadi_round_state", "1 for the current round state, 0 otherwise",
                    ["federation", "state"])
ROUND_DURATION = Histogram("ucadi_round_duration_seconds", "Round duration, open to sealed",
                           ["federation"],
                           buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200))
ROUND_PARTICIPANTS = Gauge("ucadi_round_participants", "Sites that uploaded to the current round",
                           ["federation"])
ROUND_EXPECTED = Gauge("ucadi_round_expected_participants",
                       "Sites expected in the current round", ["federation"])
ROUND_DEADLINE = Gauge("ucadi_round_deadline_timestamp_seconds",
                       "Upload deadline of the current round (Unix time)", ["federation"])
ROUND_SEALED = Gauge("ucadi_round_sealed_timestamp_seconds",
                     "When the current round was sealed (Unix time; 0 until it is)",
                     ["federation"])
UPLOAD_BYTES = Counter("ucadi_upload_bytes_total",
                       "Ciphertext bytes of accepted site updates (received here, or sent by the "
                       "site to the sum service and recorded here)", ["federation"])
DOWNLOAD_BYTES = Counter("ucadi_download_bytes_total",
                         "Global-model ciphertext bytes served by the aggregator, as chunk "
                         "messages (sites that exchange ciphertexts with the sum service fetch "
                         "them there)",
                         ["federation"])
UPLOADS_REJECTED = Counter("ucadi_uploads_rejected_total", "Uploads refused, by reason",
                           ["federation", "reason"])
SITE_LAST_ROUND = Gauge("ucadi_site_last_round", "Last round a site uploaded to",
                        ["federation", "site"])
SITE_AUC = Gauge("ucadi_site_validation_auc", "Validation AUC a site shared",
                 ["federation", "site"])
SITE_SENSITIVITY = Gauge("ucadi_site_validation_sensitivity",
                         "Validation sensitivity a site shared", ["federation", "site"])
SITE_SPECIFICITY = Gauge("ucadi_site_validation_specificity",
                         "Validation specificity a site shared", ["federation", "site"])


def set_round_state(federation: str, state: str) -> None:
    """Expose `state` as the one active round state."""
    for name in ROUND_STATES:
        ROUND_STATE.labels(federation, name).set(1.0 if name == state else 0.0)
