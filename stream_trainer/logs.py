"""Structured logging: one line per event of interest, plain text or JSON."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# What a group or transaction coordinator answers while a fresh broker is still electing
# or loading it: normal for a few seconds at start-up, and retried by aiokafka.
_COORDINATOR_WAIT = (
    CoordinatorNotAvailableError,
    NotCoordinatorError,
    CoordinatorLoadInProgressError,
)
WAITING_MESSAGE = "waiting for the group coordinator (the broker is still electing it)"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any `extra=` fields merged in."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable line with `extra=` fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line


class CoordinatorWaitFilter(logging.Filter):
    """aiokafka's ERROR lines for a coordinator not available yet become one INFO line.

    aiokafka logs every retry of its coordinator lookup at ERROR while a fresh broker elects
    one; the first such record of a wait is rewritten to INFO `WAITING_MESSAGE`, repeats
    within `quiet_s` of the previous one are dropped, and every other record (real errors
    included) passes unchanged. Attached to the handler, since logger filters do not see
    records of child loggers. `level` is the handler's threshold: the handler compared it
    with the record's old level, so the rewritten one is checked here.
    """

    def __init__(
        self,
        level: int = logging.NOTSET,
        quiet_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._level = level
        self._quiet_s = quiet_s
        self._clock = clock
        self._last: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not _is_coordinator_wait(record):
            return True
        now = self._clock()
        repeat = self._last is not None and now - self._last < self._quiet_s
        self._last = now
        if repeat:
            return False
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        record.msg, record.args, record.exc_info, record.exc_text = WAITING_MESSAGE, (), None, None
        return self._level <= logging.INFO


def _is_coordinator_wait(record: logging.LogRecord) -> bool:
    if not record.name.startswith("aiokafka") or record.levelno < logging.WARNING:
        return False
    args = record.args if isinstance(record.args, tuple) else (record.args,)
    error = record.exc_info[1] if record.exc_info else None
    return any(isinstance(a, _COORDINATOR_WAIT) for a in (*args, error))


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.setLevel(level)
    handler.addFilter(CoordinatorWaitFilter(root.level))
    root.handlers[:] = [handler]
    # aiokafka logs every retry of an unreachable broker at WARNING or ERROR, thousands a
    # second in an outage; our own lines say what matters (one WARNING when degraded, one
    # INFO on recovery, our errors with their causes). Its detail shows with DEBUG, at
    # its INFO level: its own DEBUG lines would include SASL PLAIN passwords.
    aiokafka_level = logging.INFO if root.level <= logging.DEBUG else logging.CRITICAL
    logging.getLogger("aiokafka").setLevel(aiokafka_level)
    # numba's compiler logs its IR at DEBUG: pages per kernel, nothing for an operator.
    logging.getLogger("numba").setLevel(max(logging.WARNING, root.level))
