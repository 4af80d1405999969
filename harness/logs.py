"""Structured logs for live runs: one JSON object per line (DESIGN 3.8).

Every line carries ``ts`` (ISO-8601 UTC), ``level``, ``event``, ``run_id``, ``request_id``,
``symbol`` (empty when there is none), ``profile``, ``logger`` and ``message``, plus the fields a
caller passes in ``extra={"event": ..., "symbol": ..., "request_id": ..., "data": {...}}``.
``request_id`` defaults to the one carried by :data:`harness.exchange.request_id_var` (the job
run or exchange call in progress). The API key and secret are replaced by ``***`` in every
line, whatever logged them (keys shorter than :data:`MIN_SECRET` are placeholders, left alone).
Replays keep Python's human-readable lines.

    with structured_logging(LogContext(profile="staging"), secrets=(key, secret)):
        ...   # harness.* loggers write JSON lines to stderr
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

#: Loggers whose records become JSON lines (the library, the shipped strategies).
LOGGERS = ("harness", "strategies")
#: Shorter "secrets" (a placeholder such as ``k``) are not masked: it would garble every line.
MIN_SECRET = 4


@dataclass
class LogContext:
    """What every line of a run repeats; ``run_id`` is filled in once the run has one."""

    run_id: str | None = None
    profile: str | None = None
    mode: str | None = None



def iso_from_epoch(seconds: float | None) -> str | None:
    """``2026-11-26T19:25:00.123Z`` for epoch seconds (None stays None)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def current_request_id() -> str | None:
    """The request id carried by the exchange adapter's context variable, if it is loaded."""
    exchange = sys.modules.get("harness.exchange")
    var = getattr(exchange, "request_id_var", None)
    return var.get() if var is not None else None


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line with the run's context; secrets masked."""

    def __init__(self, context: LogContext, secrets: tuple[str, ...] = ()):
        super().__init__()
        self.context = context
        self.secrets = tuple(s for s in secrets if s and len(s) >= MIN_SECRET)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": iso_from_epoch(record.created),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or "log",
            "run_id": self.context.run_id,
            "request_id": getattr(record, "request_id", None) or current_request_id() or "",
            "symbol": getattr(record, "symbol", None) or "",
            "profile": self.context.profile,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            for key, value in data.items():
                line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self.mask(json.dumps(line, default=str, ensure_ascii=False))

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def log_level() -> int:
    """``QT_LOG_LEVEL`` (debug, info, warning ...; default info)."""
    name = os.environ.get("QT_LOG_LEVEL", "info").upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.INFO


@contextmanager
def structured_logging(context: LogContext, secrets: tuple[str, ...] = (), path: str | None = None,
                       stream: IO[str] | None = None, level: int | None = None) -> Iterator[logging.Handler]:
    """JSON lines from the :data:`LOGGERS` to ``path`` (appended) or ``stream`` (default stderr)
    for the duration of the block; the loggers' previous handlers and levels come back after."""
    if path:
        handler: logging.Handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)   # one write per line, under its lock
    handler.setFormatter(JsonFormatter(context, secrets))
    level = log_level() if level is None else level
    handler.setLevel(level)
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(min(level, logger.level) if logger.level else level)
        logger.propagate = False
    try:
        yield handler
    finally:
        for logger, old_level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = propagate
        handler.close()

