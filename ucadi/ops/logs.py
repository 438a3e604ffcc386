"""Logs of `ucadi serve`: one line per record on stderr, as text for a person or as JSON for a
log pipeline (Loki, Elasticsearch, Cloud Logging), at the level the operator chose."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, service, logger, message."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                     timespec="milliseconds"),
                 "level": record.levelname.lower(), "service": self.service,
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class ServiceHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler `setup_logging` installs; `name_service` relabels its lines."""

    def __init__(self, service: str, log_format: str) -> None:
        super().__init__(sys.stderr)
        self.log_format = log_format
        self.label(service)

    def label(self, service: str) -> None:
        """Name `service` on every line from now on."""
        self.setFormatter(JsonFormatter(service) if self.log_format == "json" else
                          logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))


def setup_logging(service: str, level: str = "info", log_format: str = "text") -> None:
    """Send every log record at `level` or above to stderr in `log_format`."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(ServiceHandler(service, log_format))
    root.setLevel(level.upper())


def name_service(service: str) -> None:
    """Relabel the service's log lines once it knows more of itself (a trainer its site)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ServiceHandler):
            handler.label(service)
