"""Invalid Pulse records, each with the dead-letter reason the trainer must give it.

`bad_records` cycles through every reason a decoder can give (malformed bytes, schema
violations, non-finite numbers, naive timestamps, over-long names, oversized values);
`duplicate_of`, `out_of_order_of` and `key_mismatch_of` derive from a valid record the
invalid ones that only its context makes invalid. Records are
``(kind, key, value, expected_reason)``; everything is seeded by the `SyntheticPulse`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import msgspec
import numpy as np

from stream_trainer.dev.synthetic import FEEDBACK, OBSERVATION, Record, SyntheticPulse
from stream_trainer.events import (
    DEFAULT_MAX_EVENT_BYTES,
    MAX_NAME_LENGTH,
    Feedback,
    Observation,
    Reason,
    decode_feedback,
    decode_observation,
    encode,
    from_ts_us,
    ts_us,
)

BadRecord = tuple[str, bytes | None, bytes, str]  # (kind, key, value, expected reason)


def bad_records(
    pulse: SyntheticPulse, n: int, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> Iterator[BadRecord]:
    """``n`` invalid records cycling through every reason a decoder can give.

    Oversized values are ``max_event_bytes`` + a little, so tests can lower the limit
    (and the service's ``max_event_bytes``) to keep traffic small.
    """
    rng = np.random.default_rng([pulse.seed, 2])
    templates = _BadTemplates(pulse, max_event_bytes)
    for i in range(n):
        make = _BAD_VARIANTS[i % len(_BAD_VARIANTS)]
        yield make(templates, rng, i)


class _BadTemplates:
    """Valid events to break, one per bad record (unique event ids)."""

    def __init__(self, pulse: SyntheticPulse, max_event_bytes: int) -> None:
        self.pulse = pulse
        self.max_event_bytes = max_event_bytes

    def observation(self, i: int) -> dict[str, Any]:
        pulse = self.pulse
        event = Observation(
            event_id=f"bo-{pulse.seed}-{i}",
            variable=pulse.variables[i % len(pulse.variables)],
            ts=pulse.start,
            value=1.5,
            source=pulse.source,
        )
        return msgspec.to_builtins(event)  # type: ignore[no-any-return]

    def feedback(self, i: int) -> dict[str, Any]:
        pulse = self.pulse
        event = Feedback(
            event_id=f"bf-{pulse.seed}-{i}",
            rule_id=pulse.rules[i % len(pulse.rules)],
            ts=pulse.start,
            success=True,
            weight=1.0,
            error=0.25,
        )
        return msgspec.to_builtins(event)  # type: ignore[no-any-return]


def _dumps(document: object) -> bytes:
    # Python's json writes NaN/Infinity literals, as a careless producer would.
    return json.dumps(document, separators=(",", ":")).encode()


def _key(event: dict[str, Any]) -> bytes:
    return str(event.get("variable", event.get("rule_id", ""))).encode()


def _bad(kind: str, event: dict[str, Any], reason: Reason) -> BadRecord:
    return kind, _key(event), _dumps(event), str(reason)


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _not_json(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    raw = _dumps(t.observation(i))
    cut = raw[: int(rng.integers(1, len(raw) - 1))]  # a truncated document
    return OBSERVATION, None, _pick(rng, [cut, b"not json", b""]), Reason.MALFORMED.value


def _not_object(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    event = t.feedback(i)
    value = _pick(rng, [_dumps([event]), b'"a string"', b"42", b"null", b"true"])
    return FEEDBACK, _key(event), value, Reason.MALFORMED.value


def _not_utf8(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    event = t.observation(i)
    # An unknown field with Latin-1 bytes: msgspec alone would skip it unchecked.
    raw = _dumps(event)[:-1] + b',"note":"caf\xe9"}'
    return OBSERVATION, _key(event), raw, Reason.MALFORMED.value


def _missing_field(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    event = t.feedback(i)
    del event[_pick(rng, ["event_id", "rule_id", "ts", "success"])]
    return _bad(FEEDBACK, event, Reason.SCHEMA)


def _wrong_type(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    event = t.observation(i)
    field, value = _pick(
        rng, [("value", "1.5"), ("value", True), ("ts", 1767225600), ("event_id", 7)]
    )
    event[field] = value
    return _bad(OBSERVATION, event, Reason.SCHEMA)


def _out_of_range(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    event = t.feedback(i)
    field, value = _pick(rng, [("weight", 0.0), ("weight", -1.0), ("error", -0.5), ("rule_id", "")])
    event[field] = value
    return _bad(FEEDBACK, event, Reason.SCHEMA)


def _non_finite(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    kind, event = _pick(rng, [(OBSERVATION, t.observation(i)), (FEEDBACK, t.feedback(i))])
    field = "value" if kind == OBSERVATION else _pick(rng, ["weight", "error"])
    event[field] = _pick(rng, [float("nan"), float("inf"), float("-inf")])
    return _bad(kind, event, Reason.NON_FINITE)


def _overflow(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    event = t.observation(i)
    raw = _dumps(event).replace(b'"value":1.5', b'"value":' + _pick(rng, [b"1e999", b"-2e400"]))
    return OBSERVATION, _key(event), raw, Reason.NON_FINITE.value


def _naive_ts(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    kind, event = _pick(rng, [(OBSERVATION, t.observation(i)), (FEEDBACK, t.feedback(i))])
    event["ts"] = _pick(rng, ["2026-01-01T00:00:00", "2026-01-01T12:30:00.250000"])
    return _bad(kind, event, Reason.NAIVE_TIMESTAMP)


def _long_name(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    kind, event = _pick(rng, [(OBSERVATION, t.observation(i)), (FEEDBACK, t.feedback(i))])
    field = "variable" if kind == OBSERVATION else "rule_id"
    event[field] = "x" * int(rng.integers(MAX_NAME_LENGTH + 1, 2 * MAX_NAME_LENGTH))
    return _bad(kind, event, Reason.NAME_TOO_LONG)


def _oversized(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    kind, event = _pick(rng, [(OBSERVATION, t.observation(i)), (FEEDBACK, t.feedback(i))])
    event["padding"] = "p" * (t.max_event_bytes + int(rng.integers(1, 64)))
    return _bad(kind, event, Reason.OVERSIZED)


_BadVariant = Callable[[_BadTemplates, np.random.Generator, int], BadRecord]
_BAD_VARIANTS: Final[tuple[_BadVariant, ...]] = (
    _not_json,
    _missing_field,
    _non_finite,
    _naive_ts,
    _long_name,
    _not_object,
    _wrong_type,
    _overflow,
    _out_of_range,
    _not_utf8,
    _oversized,
)


# ------------------------------------------------------------ contextual invalid records


def duplicate_of(record: Record) -> BadRecord:
    """A re-send of ``record``, to be produced after it (same partition).

    An observation keeps its ts and value under a new event_id (reason ``duplicate``); a
    feedback keeps its event_id and gains an unknown field, so the bytes differ from the
    original's while the event is the same (reason ``duplicate_event_id``).
    """
    kind, key, value = record
    if kind == OBSERVATION:
        observation = decode_observation(value)
        copy = msgspec.structs.replace(observation, event_id=f"{observation.event_id}-dup")
        return kind, key, encode(copy), Reason.DUPLICATE.value
    decode_feedback(value)  # only valid feedback can be a duplicate
    return kind, key, value[:-1] + b',"retry":1}', Reason.DUPLICATE_EVENT_ID.value


def out_of_order_of(record: Record, *, by_s: float = 1.0) -> BadRecord:
    """An observation of the same variable ``by_s`` seconds older than ``record``'s.

    Produced after ``record`` (same partition), it is not strictly newer than the last
    applied observation of its variable, whose ts differs: reason ``out_of_order``.
    """
    kind, key, value = record
    if kind != OBSERVATION:
        raise ValueError("out_of_order applies to observations only")
    observation = decode_observation(value)
    older = msgspec.structs.replace(
        observation,
        event_id=f"{observation.event_id}-ooo",
        ts=from_ts_us(ts_us(observation.ts) - max(1, round(by_s * 1e6))),
    )
    return kind, key, encode(older), Reason.OUT_OF_ORDER.value


def key_mismatch_of(record: Record) -> BadRecord:
    """``record``'s event under a new event_id, keyed by another name: ``key_mismatch``."""
    kind, key, value = record
    event: Observation | Feedback = (
        decode_observation(value) if kind == OBSERVATION else decode_feedback(value)
    )
    copy = msgspec.structs.replace(event, event_id=f"{event.event_id}-km")
    return kind, b"mismatch." + key, encode(copy), Reason.KEY_MISMATCH.value
