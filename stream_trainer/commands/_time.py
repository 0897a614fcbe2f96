"""Parsing the RFC 3339 times that command-line options take."""

from __future__ import annotations

from datetime import datetime

from stream_trainer.errors import ConfigError


def parse_utc_time(value: str, option: str) -> datetime:
    """An RFC 3339 time with its UTC offset; a clear error naming `option` otherwise."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(f"{option} must be an RFC 3339 time: {value!r}") from exc
    if parsed.tzinfo is None:
        raise ConfigError(f"{option} needs a UTC offset (e.g. {value}Z): {value!r}")
    return parsed
