"""Fuzzing both decoders (issue 5): only DecodeError, and never an invalid event accepted."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_trainer import events as ev
from stream_trainer.errors import DecodeError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Event = ev.Observation | ev.Feedback
Decode = Callable[[bytes | None], Event]
KINDS: dict[str, Decode] = {"observation": ev.decode_observation, "feedback": ev.decode_feedback}


def assert_invariants(event: Event) -> None:
    """Everything DESIGN section 2 promises about an accepted event."""
    assert isinstance(event.event_id, str)
    assert event.ts.tzinfo is not None
    assert event.ts.utcoffset() is not None
    if isinstance(event, ev.Observation):
        assert 1 <= len(event.variable) <= ev.MAX_NAME_LENGTH
        assert type(event.value) is float
        assert math.isfinite(event.value)
        assert event.source is None or isinstance(event.source, str)
    else:
        assert 1 <= len(event.rule_id) <= ev.MAX_NAME_LENGTH
        assert type(event.success) is bool
        assert type(event.weight) is float
        assert math.isfinite(event.weight)
        assert event.weight > 0
        assert event.error is None or (math.isfinite(event.error) and event.error >= 0)


def decode_or_reason(kind: str, raw: bytes | None) -> Event | str:
    """The event, or the DecodeError reason; any other exception fails the test."""
    try:
        event = KINDS[kind](raw)
    except DecodeError as exc:
        reason = str(exc.reason)
    else:
        assert_invariants(event)
        return event
    assert reason in ev.DECODE_REASONS
    return reason


kinds = st.sampled_from(sorted(KINDS))


@FUZZ
@given(kinds, st.binary(max_size=300))
def test_arbitrary_bytes(kind: str, raw: bytes) -> None:
    decode_or_reason(kind, raw)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included: json.dumps writes them as literals
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(kinds, json_values)
def test_arbitrary_json_documents(kind: str, document: Any) -> None:
    decode_or_reason(kind, json.dumps(document).encode())


# ------------------------------------------------------------------- valid events

names = st.text(min_size=1, max_size=ev.MAX_NAME_LENGTH)
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=45))]
)
timestamps = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets
)
finite = st.floats(allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=0.0, exclude_min=True, allow_infinity=False)
non_negative = st.floats(min_value=0.0, allow_infinity=False)

observations = st.builds(
    ev.Observation,
    event_id=st.text(max_size=40),
    variable=names,
    ts=timestamps,
    value=finite,
    source=st.none() | st.text(max_size=20),
)
feedbacks = st.builds(
    ev.Feedback,
    event_id=st.text(max_size=40),
    rule_id=names,
    ts=timestamps,
    success=st.booleans(),
    weight=positive,
    forecast_id=st.none() | st.text(max_size=20),
    error=st.none() | non_negative,
)
valid_events = observations | feedbacks


def kind_of(event: Event) -> str:
    return "observation" if isinstance(event, ev.Observation) else "feedback"


@FUZZ
@given(valid_events)
def test_valid_events_round_trip(event: Event) -> None:
    assert decode_or_reason(kind_of(event), ev.encode(event)) == event


@FUZZ
@given(valid_events, st.data())
def test_byte_mutations_of_valid_events(event: Event, data: st.DataObject) -> None:
    raw = bytearray(ev.encode(event))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "insert" or at == len(raw):
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=3))
        elif action == "flip":
            raw[at] = data.draw(st.integers(0, 255))
        else:
            del raw[at]
    decode_or_reason(kind_of(event), bytes(raw))


# ---------------------------------------------- semantic mutations with a known reason

NAME_FIELD = {"observation": "variable", "feedback": "rule_id"}
REQUIRED = {
    "observation": ["event_id", "variable", "ts", "value"],
    "feedback": ["event_id", "rule_id", "ts", "success"],
}
_NOT_STRINGS = [1.5, True, [1.0], {"v": 1}, None]
WRONG_TYPES: dict[str, list[Any]] = {
    "event_id": _NOT_STRINGS,
    "variable": _NOT_STRINGS,
    "rule_id": _NOT_STRINGS,
    "ts": ["1.5", "yesterday", 1767225600, True, None],
    "value": ["1.5", True, None, [1.0]],
    "success": ["true", 1, 0.0, None],
}
FLOAT_FIELDS = {"observation": ["value"], "feedback": ["weight", "error"]}


def mutations(kind: str) -> st.SearchStrategy[tuple[Callable[[dict[str, Any]], None], str]]:
    """(mutate the document in place, expected reason)."""

    def drop(field: str) -> Callable[[dict[str, Any]], None]:
        return lambda d: d.pop(field)

    def put(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
        return lambda d: d.__setitem__(field, value)

    def strip_tz(d: dict[str, Any]) -> None:
        d["ts"] = datetime.fromisoformat(d["ts"]).replace(tzinfo=None).isoformat()

    name = NAME_FIELD[kind]
    floats = FLOAT_FIELDS[kind]
    options = [
        st.sampled_from(REQUIRED[kind]).map(lambda f: (drop(f), "schema")),
        st.sampled_from([(f, v) for f in REQUIRED[kind] for v in WRONG_TYPES[f]]).map(
            lambda fv: (put(*fv), "schema")
        ),
        st.tuples(st.sampled_from(floats), st.sampled_from([math.nan, math.inf, -math.inf])).map(
            lambda fv: (put(*fv), "non_finite")
        ),
        st.just((strip_tz, "naive_timestamp")),
        st.integers(ev.MAX_NAME_LENGTH + 1, 1000).map(
            lambda n: (put(name, "n" * n), "name_too_long")
        ),
        st.just((put(name, ""), "schema")),
    ]
    if kind == "feedback":
        options.append(
            st.floats(max_value=0.0, allow_nan=False, allow_infinity=False).map(
                lambda w: (put("weight", w), "schema")
            )
        )
        options.append(
            st.floats(max_value=-1e-300, allow_infinity=False).map(
                lambda e: (put("error", e), "schema")
            )
        )
    return st.one_of(options)


def overflowing_number(raw: bytes, field: str) -> bytes:
    """Replace a float field's number with one that overflows float64 when parsed."""
    document = msgspec.json.decode(raw)
    document[field] = 12345.0
    return json.dumps(document).encode().replace(b"12345.0", b"-1e999")


@FUZZ
@given(valid_events, st.data())
def test_invalidating_mutations_are_rejected_with_their_reason(
    event: Event, data: st.DataObject
) -> None:
    kind = kind_of(event)
    document = msgspec.to_builtins(event)
    mutate, reason = data.draw(mutations(kind))
    mutate(document)
    assert decode_or_reason(kind, json.dumps(document).encode()) == reason


@FUZZ
@given(valid_events, st.data())
def test_overflowing_numbers_are_non_finite(event: Event, data: st.DataObject) -> None:
    kind = kind_of(event)
    field = data.draw(st.sampled_from(FLOAT_FIELDS[kind]))
    assert decode_or_reason(kind, overflowing_number(ev.encode(event), field)) == "non_finite"


@FUZZ
@given(valid_events, st.integers(0, 200))
def test_oversized_wins_over_everything(event: Event, extra: int) -> None:
    raw = ev.encode(event)
    assert decode_or_reason(kind_of(event), raw + b"\xff" * (extra + 1)) != "oversized"
    limit = max(0, len(raw) - 1 - extra)
    with pytest.raises(DecodeError) as info:
        KINDS[kind_of(event)](raw + b"\xff", max_bytes=limit)  # type: ignore[call-arg]
    assert info.value.reason == "oversized"
