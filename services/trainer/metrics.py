"""Prometheus metrics of a site's trainer agent."""

from prometheus_client import Counter, Gauge, Histogram

_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

TRAIN_SECONDS = Histogram("ucadi_trainer_train_seconds", "Local training time per round",
                          buckets=_BUCKETS)
ENCRYPT_SECONDS = Histogram("ucadi_trainer_encrypt_seconds", "Time to encrypt a model update",
                            buckets=_BUCKETS)
DECRYPT_SECONDS = Histogram("ucadi_trainer_decrypt_seconds", "Time to decrypt a global model",
                            buckets=_BUCKETS)
ROUNDS_COMPLETED = Counter("ucadi_trainer_rounds_completed_total",
                           "Rounds this site trained and uploaded")
LAST_ROUND = Gauge("ucadi_trainer_last_round", "Last round this site uploaded to")
SUMS_REFUSED = Counter("ucadi_trainer_sums_refused_total",
                       "Global versions this site refused to decrypt into a model, by the check "
                       "that failed (round, quorum, contributors, tag)", ["reason"])
