"""Wire contracts: decoding, reasons, encoding, time helpers and columns (DESIGN section 2)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_trainer import columns as cols
from stream_trainer import events as ev
from stream_trainer.errors import DecodeError, StreamTrainerError

TS = '"ts":"2026-01-01T00:00:00Z"'
OBS = b'{"event_id":"o-1","variable":"spx_close",' + TS.encode() + b',"value":4321.5}'
FB = b'{"event_id":"f-1","rule_id":"rule.momentum.spx",' + TS.encode() + b',"success":true}'

Decoder = Callable[[bytes | None], ev.Observation | ev.Feedback]
DECODERS: dict[str, Decoder] = {
    "observation": ev.decode_observation,
    "feedback": ev.decode_feedback,
}

# Each decode reason with example payloads: (kind, value bytes). The report lists these.
EXAMPLES: dict[ev.Reason, list[tuple[str, bytes | None]]] = {
    ev.Reason.MALFORMED: [
        ("observation", None),  # a tombstone: no value at all
        ("observation", b"{not json"),
        ("observation", b""),
        ("feedback", b'[{"event_id":"f-1"}]'),  # JSON, but not an object
        ("feedback", b'"feedback"'),
        ("observation", OBS[:-1] + b',"note":"caf\xe9"}'),  # Latin-1, not UTF-8
        ("observation", b'{"event_id":"o-1","variable":"\xff\xfe"}'),
        ("observation", OBS + b" trailing"),
        ("feedback", b'{"event_id":"a", NaN}'),  # NaN literal, but not JSON even then
    ],
    ev.Reason.SCHEMA: [
        ("observation", b'{"event_id":"o-1","variable":"spx_close",' + TS.encode() + b"}"),
        ("observation", OBS.replace(b"4321.5", b'"4321.5"')),
        ("observation", OBS.replace(b"4321.5", b'"NaN"')),  # a string is not a number
        ("observation", OBS.replace(b"4321.5", b"true")),
        ("observation", OBS.replace(b'"2026-01-01T00:00:00Z"', b"1767225600")),
        ("observation", OBS.replace(b'"2026-01-01T00:00:00Z"', b'"2026-13-01T00:00:00Z"')),
        ("observation", OBS.replace(b"spx_close", b"")),
        ("feedback", FB.replace(b"true", b"1")),
        ("feedback", FB[:-1] + b',"weight":0}'),
        ("feedback", FB[:-1] + b',"weight":-2.5}'),
        ("feedback", FB[:-1] + b',"error":-0.1}'),
        ("feedback", FB.replace(b'"event_id":"f-1"', b'"event_id":null')),
        ("feedback", b"{}"),
    ],
    ev.Reason.NON_FINITE: [
        ("observation", OBS.replace(b"4321.5", b"1e999")),
        ("observation", OBS.replace(b"4321.5", b"-1e400")),
        ("observation", OBS.replace(b"4321.5", b"NaN")),  # what Python's json.dumps writes
        ("observation", OBS.replace(b"4321.5", b"-Infinity")),
        ("feedback", FB[:-1] + b',"weight":Infinity}'),
        ("feedback", FB[:-1] + b',"error":1e309}'),
    ],
    ev.Reason.NAIVE_TIMESTAMP: [
        ("observation", OBS.replace(b"00:00:00Z", b"00:00:00")),
        ("feedback", FB.replace(b"00:00:00Z", b"00:00:00.250")),
    ],
    ev.Reason.NAME_TOO_LONG: [
        ("observation", OBS.replace(b"spx_close", b"v" * 201)),
        ("feedback", FB.replace(b"rule.momentum.spx", b"r" * 5000)),
    ],
    ev.Reason.OVERSIZED: [
        ("observation", OBS[:-1] + b',"pad":"' + b"p" * 70_000 + b'"}'),
        ("feedback", b"\xff" * 65_537),  # size is checked before anything else
    ],
}


def _cases() -> list[tuple[ev.Reason, str, bytes | None]]:
    return [(r, kind, raw) for r, examples in EXAMPLES.items() for kind, raw in examples]


@pytest.mark.parametrize(("reason", "kind", "raw"), _cases())
def test_each_reason_example_is_rejected_with_that_reason(
    reason: ev.Reason, kind: str, raw: bytes | None
) -> None:
    with pytest.raises(DecodeError) as info:
        DECODERS[kind](raw)
    assert info.value.reason == reason, info.value.detail
    assert isinstance(info.value, StreamTrainerError)


def test_examples_cover_every_decode_reason() -> None:
    assert set(EXAMPLES) == ev.DECODE_REASONS
    assert {str(r) for r in ev.Reason} >= {"out_of_order", "duplicate", "duplicate_event_id"}


def test_valid_observation_decodes_to_exact_fields() -> None:
    event = ev.decode_observation(OBS)
    assert event == ev.Observation(
        event_id="o-1",
        variable="spx_close",
        ts=datetime(2026, 1, 1, tzinfo=UTC),
        value=4321.5,
    )
    assert event.source is None


def test_valid_feedback_gets_defaults() -> None:
    event = ev.decode_feedback(FB)
    assert (event.weight, event.forecast_id, event.error) == (1.0, None, None)
    full = FB[:-1] + b',"weight":2.5,"forecast_id":"fc-9","error":0}'
    assert ev.decode_feedback(full).weight == 2.5
    assert ev.decode_feedback(full).error == 0.0


def test_offsets_other_than_utc_are_kept_and_compare_as_instants() -> None:
    event = ev.decode_observation(OBS.replace(b"00:00:00Z", b"01:00:00+01:00"))
    assert event.ts.utcoffset() == timedelta(hours=1)
    assert ev.ts_us(event.ts) == ev.ts_us(datetime(2026, 1, 1, tzinfo=UTC))


def test_unknown_fields_are_ignored() -> None:
    extra = OBS[:-1] + b',"unit":"USD","tags":{"a":[1,2,{"b":null}]},"v2":1e999}'
    assert ev.decode_observation(extra) == ev.decode_observation(OBS)


@pytest.mark.parametrize("field", ["event_id", "variable", "ts", "value"])
def test_missing_required_observation_field_is_schema(field: str) -> None:
    document = msgspec.json.decode(OBS)
    del document[field]
    with pytest.raises(DecodeError) as info:
        ev.decode_observation(msgspec.json.encode(document))
    assert info.value.reason == ev.Reason.SCHEMA
    assert field in info.value.detail


def test_name_length_bounds_are_inclusive() -> None:
    assert ev.decode_observation(OBS.replace(b"spx_close", b"v" * 200)).variable == "v" * 200
    assert ev.decode_feedback(FB.replace(b"rule.momentum.spx", b"r")).rule_id == "r"


def test_max_bytes_is_the_inclusive_limit() -> None:
    assert ev.decode_observation(OBS, max_bytes=len(OBS)) == ev.decode_observation(OBS)
    with pytest.raises(DecodeError) as info:
        ev.decode_observation(OBS, max_bytes=len(OBS) - 1)
    assert info.value.reason == ev.Reason.OVERSIZED


def test_decode_error_chains_the_msgspec_cause() -> None:
    with pytest.raises(DecodeError) as info:
        ev.decode_feedback(FB.replace(b"true", b"1"))
    assert isinstance(info.value.__cause__, msgspec.ValidationError)
    assert "success" in info.value.detail


def test_deeply_nested_unknown_field_is_malformed_not_recursion_error() -> None:
    raw = OBS[:-1] + b',"deep":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    with pytest.raises(DecodeError) as info:
        ev.decode_observation(raw, max_bytes=1 << 20)
    assert info.value.reason == ev.Reason.MALFORMED


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("Number out of range - at `$.value`", ev.Reason.NON_FINITE),
        ("Expected `datetime` with a timezone component - at `$.ts`", ev.Reason.NAIVE_TIMESTAMP),
        ("Expected `str` of length <= 200 - at `$.rule_id`", ev.Reason.NAME_TOO_LONG),
        ("Expected `object`, got `array`", ev.Reason.MALFORMED),
        ("Expected `str` of length >= 1 - at `$.variable`", ev.Reason.SCHEMA),
        ("Expected `float`, got `str` - at `$.value`", ev.Reason.SCHEMA),
        ("Object missing required field `ts`", ev.Reason.SCHEMA),
        ("Expected `object`, got `array` - at `$.nested`", ev.Reason.SCHEMA),
    ],
)
def test_validation_message_table(message: str, reason: ev.Reason) -> None:
    assert ev.validation_reason(message) == reason


def test_long_detail_is_truncated() -> None:
    with pytest.raises(DecodeError) as info:
        ev.decode_observation(b"{" + b'"k' * 1000)
    assert len(info.value.detail) <= 300


# ----------------------------------------------------------------------------- encoding


def test_round_trip_encode_decode() -> None:
    event = ev.Feedback(
        event_id="f-2",
        rule_id="rule.carry.v00001",
        ts=datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=timezone(timedelta(hours=-5))),
        success=False,
        weight=0.5,
        forecast_id="fc-2",
        error=3.25,
    )
    assert ev.decode_feedback(ev.encode(event)) == event
    assert ev.encode_many([event, event]) == [ev.encode(event)] * 2


def test_field_order_follows_design() -> None:
    assert ev.Observation.__struct_fields__ == ("event_id", "variable", "ts", "value", "source")
    assert ev.Feedback.__struct_fields__ == (
        "event_id",
        "rule_id",
        "ts",
        "success",
        "weight",
        "forecast_id",
        "error",
    )
    assert ev.ModelVersion.__struct_fields__[-2:] == ("trained_through", "published_at")
    assert ev.RuleVersion.__struct_fields__[:5] == ("rule_id", "version", "alpha", "beta", "trust")


def test_output_structs_write_nulls_and_defaults() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    version = ev.ModelVersion(
        model_id="spx_close",
        version=1,
        order=3,
        coefficients=[0.1, 0.9, 0.0, 0.0],
        n_observations=3,
        mse=0.0,
        baseline_mse=0.0,
        skill=None,
        trained_through=now,
        published_at=now,
    )
    document = msgspec.json.decode(ev.encode(version))
    assert document["skill"] is None
    assert list(document) == list(ev.ModelVersion.__struct_fields__)
    assert msgspec.json.decode(ev.encode(version), type=ev.ModelVersion) == version


def test_rule_status_is_restricted() -> None:
    now = "2026-01-02T00:00:00Z"
    document = {
        "rule_id": "r",
        "version": 1,
        "alpha": 2.0,
        "beta": 1.0,
        "trust": 0.6,
        "trust_low": 0.1,
        "trust_high": 0.9,
        "evidence": 1.0,
        "status": "active",
        "trained_through": now,
        "published_at": now,
    }
    assert msgspec.convert(document, ev.RuleVersion).status == "active"
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**document, "status": "sleeping"}, ev.RuleVersion)


# --------------------------------------------------------------------------------- times

aware = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)


@given(aware)
def test_ts_us_is_exact_and_invertible(dt: datetime) -> None:
    micros = ev.ts_us(dt)
    naive_utc = (dt - dt.utcoffset()).replace(tzinfo=None)  # type: ignore[operator]
    delta = naive_utc - datetime(1970, 1, 1)
    assert micros == (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    assert ev.from_ts_us(micros) == dt
    assert ev.from_ts_us(micros).tzinfo is UTC


@given(aware)
def test_ts_s_is_correctly_rounded_microseconds(dt: datetime) -> None:
    # int / int is correctly rounded even above 2**53 microseconds (year > 2255).
    assert ev.ts_s(dt) == ev.ts_us(dt) / 1_000_000 == dt.timestamp()


@given(st.lists(aware, max_size=20))
def test_array_helpers_match_scalar_helpers(values: list[datetime]) -> None:
    assert cols.ts_us_array(values).tolist() == [ev.ts_us(v) for v in values]
    assert cols.ts_s_array(values).tolist() == [ev.ts_s(v) for v in values]


def test_ts_us_array_is_exact_across_the_float_fast_path_limit() -> None:
    limit = ev.from_ts_us(2**32 * 1_000_000)
    values = [limit + timedelta(microseconds=d) for d in (-1, 0, 1, 999_999)]
    values.append(datetime(2100, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC))
    assert cols.ts_us_array(values).tolist() == [ev.ts_us(v) for v in values]


def test_utc_now_is_aware() -> None:
    assert ev.utc_now().tzinfo is UTC


# ------------------------------------------------------------------------------ columns


def test_observations_to_columns() -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        ev.Observation(f"o-{i}", f"v{i % 2}", base + timedelta(microseconds=i), float(i))
        for i in range(5)
    ]
    columns = cols.observations_to_columns(events)
    assert columns.variable == ["v0", "v1", "v0", "v1", "v0"]
    assert columns.ts_us.dtype == np.int64
    assert columns.ts_us.tolist() == [ev.ts_us(base) + i for i in range(5)]
    assert columns.value.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert len(cols.observations_to_columns([])) == 0


def test_feedback_to_columns() -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        ev.Feedback(f"f-{i}", "r", base + timedelta(seconds=i), i % 2 == 0, weight=i + 1.0)
        for i in range(3)
    ]
    columns = cols.feedback_to_columns(events)
    assert columns.event_id == ["f-0", "f-1", "f-2"]
    assert columns.rule_id == ["r"] * 3
    assert columns.ts_s.tolist() == [ev.ts_s(base) + i for i in range(3)]
    assert columns.success.tolist() == [True, False, True]
    assert columns.weight.tolist() == [1.0, 2.0, 3.0]
    empty = cols.feedback_to_columns([])
    assert len(empty) == 0
    assert empty.success.dtype == np.bool_


def test_batch_decoders_split_valid_and_invalid_by_position() -> None:
    raws: list[bytes | None] = [OBS, None, b"[]", OBS.replace(b"o-1", b"o-2"), OBS + b"x" * 10]
    events, errors = ev.decode_observations(raws, max_bytes=len(OBS) + 5)
    assert [e.event_id for e in events] == ["o-1", "o-2"]
    assert [(i, e.reason) for i, e in errors] == [
        (1, ev.Reason.MALFORMED),
        (2, ev.Reason.MALFORMED),
        (4, ev.Reason.OVERSIZED),
    ]
    assert isinstance(errors[1][1].__cause__, msgspec.ValidationError)
    feedback, feedback_errors = ev.decode_feedbacks([FB, FB[:-1] + b',"weight":NaN}'])
    assert len(feedback) == 1
    assert feedback_errors[0][0] == 1
    assert feedback_errors[0][1].reason == ev.Reason.NON_FINITE


@pytest.mark.parametrize(("reason", "kind", "raw"), _cases())
def test_batch_and_single_decoders_agree(reason: ev.Reason, kind: str, raw: bytes | None) -> None:
    many = ev.decode_observations if kind == "observation" else ev.decode_feedbacks
    events, errors = many([raw])
    assert events == []
    assert [e.reason for _, e in errors] == [reason]


def test_non_finite_python_floats_never_reach_events() -> None:
    assert math.isfinite(
        ev.decode_observation(OBS.replace(b"4321.5", b"1.7976931348623157e308")).value
    )
