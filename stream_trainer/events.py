"""Wire contracts v1 (DESIGN section 2): the event Structs, their decoders and encoders.

The msgspec Structs below are the single source of truth: validation happens inside the
compiled msgspec decoder (one call per event on the hot path), and the JSON Schemas in
``schemas/`` are generated from them. Decoding never raises anything but
:class:`~stream_trainer.errors.DecodeError`, whose ``reason`` is one of :class:`Reason`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from operator import attrgetter
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from stream_trainer.columns import FeedbackColumns, ObservationColumns
from stream_trainer.errors import DecodeError

MAX_NAME_LENGTH: Final = 200
DEFAULT_MAX_EVENT_BYTES: Final = 65536


class Reason(StrEnum):
    """Machine-readable dead-letter reasons (the ``reason`` header, the metric label)."""

    # Decided by decoding one record alone.
    MALFORMED = "malformed"
    SCHEMA = "schema"
    NON_FINITE = "non_finite"
    NAIVE_TIMESTAMP = "naive_timestamp"
    NAME_TOO_LONG = "name_too_long"
    OVERSIZED = "oversized"
    # Decided with context (learner state, record key); never raised by the decoders.
    OUT_OF_ORDER = "out_of_order"
    DUPLICATE = "duplicate"
    DUPLICATE_EVENT_ID = "duplicate_event_id"
    KEY_MISMATCH = "key_mismatch"


DECODE_REASONS: Final = frozenset(
    {
        Reason.MALFORMED,
        Reason.SCHEMA,
        Reason.NON_FINITE,
        Reason.NAIVE_TIMESTAMP,
        Reason.NAME_TOO_LONG,
        Reason.OVERSIZED,
    }
)

# --------------------------------------------------------------------------- field types

Name = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH, description="1..200 characters"),
]
Timestamp = Annotated[
    datetime, msgspec.Meta(tz=True, description="RFC 3339 with a UTC offset (naive is invalid)")
]
Count = Annotated[int, msgspec.Meta(ge=0)]
Version = Annotated[int, msgspec.Meta(ge=1, description="+1 per publication, from 1")]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]
RuleStatus = Literal["active", "probation", "retired"]

# ----------------------------------------------------------------------------- inputs


class Observation(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """A new value of a variable at a time (topic pulse.observations, key = variable)."""

    event_id: str
    variable: Name
    ts: Timestamp
    value: float
    source: str | None = None


class Feedback(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """A checked forecast of a rule (topic pulse.feedback, key = rule_id)."""

    event_id: str
    rule_id: Name
    ts: Timestamp
    success: bool
    weight: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    forecast_id: str | None = None
    error: NonNegative | None = None


# ---------------------------------------------------------------------------- outputs


class ModelVersion(msgspec.Struct, frozen=True, omit_defaults=False):
    """A published AR(p) forecaster (topic pulse.model-versions, compacted, key = variable)."""

    model_id: str
    version: Version
    order: Count
    coefficients: list[float]
    n_observations: Count
    mse: NonNegative
    baseline_mse: NonNegative
    skill: float | None
    trained_through: Timestamp
    published_at: Timestamp


class RuleVersion(msgspec.Struct, frozen=True, omit_defaults=False):
    """A published rule trust (topic pulse.rule-versions, compacted, key = rule_id)."""

    rule_id: str
    version: Version
    alpha: float
    beta: float
    trust: Probability
    trust_low: Probability
    trust_high: Probability
    evidence: NonNegative
    status: RuleStatus
    trained_through: Timestamp
    published_at: Timestamp


class TrainingMetrics(msgspec.Struct, frozen=True, omit_defaults=False):
    """One processed batch (topic pulse.training-metrics, key = trainer instance id)."""

    batch_id: str
    observations: Count
    feedback: Count
    invalid: Count
    models_updated: Count
    rules_updated: Count
    duration_ms: NonNegative
    max_event_age_ms: float
    published_at: Timestamp


InputEvent = Observation | Feedback
EVENT_TYPES: Final[tuple[type[msgspec.Struct], ...]] = (
    Observation,
    Feedback,
    ModelVersion,
    RuleVersion,
    TrainingMetrics,
)

# ---------------------------------------------------------------------------- decoding

_OBSERVATION_DECODER: Final = msgspec.json.Decoder(Observation)
_FEEDBACK_DECODER: Final = msgspec.json.Decoder(Feedback)
_ENCODER: Final = msgspec.json.Encoder()
EventT = TypeVar("EventT", Observation, Feedback)

# msgspec ValidationError message -> reason; first match wins, anything else is `schema`.
# The patterns are anchored on msgspec's wording, which the unit tests pin per reason.
VALIDATION_REASONS: Final[tuple[tuple[re.Pattern[str], Reason], ...]] = (
    # A JSON number that overflows float64 (1e999) would be +-inf.
    (re.compile(r"^Number out of range"), Reason.NON_FINITE),
    (re.compile(r"^Expected `datetime` with a timezone component"), Reason.NAIVE_TIMESTAMP),
    # Only the name fields carry a maximum length.
    (re.compile(r"^Expected `str` of length <= \d+"), Reason.NAME_TOO_LONG),
    # The document itself is not an object (no ` - at $.path` suffix: the root).
    (re.compile(r"^Expected `object`, got `\w+`$"), Reason.MALFORMED),
)

_NON_FINITE_LITERAL: Final = re.compile(rb"NaN|Infinity")
_MAX_DETAIL: Final = 300


def decode_observation(
    raw: bytes | None, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> Observation:
    """Decode one ``pulse.observations`` value, or raise DecodeError with a reason."""
    # Hot path: one cheap guard, one compiled decode; everything else is the error path.
    if raw is None or len(raw) > max_bytes or not raw.isascii():
        raw = _precheck(raw, max_bytes)
    try:
        return _OBSERVATION_DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _decode_error(raw, exc) from exc


def decode_feedback(raw: bytes | None, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Feedback:
    """Decode one ``pulse.feedback`` value, or raise DecodeError with a reason."""
    if raw is None or len(raw) > max_bytes or not raw.isascii():
        raw = _precheck(raw, max_bytes)
    try:
        return _FEEDBACK_DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _decode_error(raw, exc) from exc


def decode_observations(
    raws: Sequence[bytes | None], *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> tuple[list[Observation], list[tuple[int, DecodeError]]]:
    """Decode many values: the valid events in order, and (position, error) of the rest."""
    return _decode_many(_OBSERVATION_DECODER, raws, max_bytes)


def decode_feedbacks(
    raws: Sequence[bytes | None], *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> tuple[list[Feedback], list[tuple[int, DecodeError]]]:
    """Decode many values: the valid events in order, and (position, error) of the rest."""
    return _decode_many(_FEEDBACK_DECODER, raws, max_bytes)


def _decode_many(
    decoder: msgspec.json.Decoder[EventT], raws: Sequence[bytes | None], max_bytes: int
) -> tuple[list[EventT], list[tuple[int, DecodeError]]]:
    # The same checks as decode_observation, inlined: no function call per valid event.
    decode = decoder.decode
    events: list[EventT] = []
    errors: list[tuple[int, DecodeError]] = []
    for position, raw in enumerate(raws):
        if raw is None or len(raw) > max_bytes or not raw.isascii():
            try:
                raw = _precheck(raw, max_bytes)
            except DecodeError as exc:
                errors.append((position, exc))
                continue
        try:
            events.append(decode(raw))
        except (msgspec.DecodeError, RecursionError) as exc:
            error = _decode_error(raw, exc)
            error.__cause__ = exc
            errors.append((position, error))
    return events, errors


def _precheck(raw: bytes | None, max_bytes: int) -> bytes:
    """Checks msgspec does not make: presence, size, and UTF-8 of skipped unknown fields."""
    if raw is None:
        raise DecodeError(Reason.MALFORMED, "no value (tombstone record)")
    if len(raw) > max_bytes:
        raise DecodeError(Reason.OVERSIZED, f"{len(raw)} bytes > max_event_bytes={max_bytes}")
    _check_utf8(raw)
    return raw


def _decode_error(raw: bytes, exc: Exception) -> DecodeError:
    if isinstance(exc, msgspec.ValidationError):
        return DecodeError(validation_reason(str(exc)), _detail(exc))
    if isinstance(exc, RecursionError):
        return DecodeError(Reason.MALFORMED, "JSON nested too deeply")
    return DecodeError(_malformed_reason(raw), _detail(exc))


def _check_utf8(raw: bytes) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(Reason.MALFORMED, f"not UTF-8: {exc.reason} at byte {exc.start}") from exc


def validation_reason(message: str) -> Reason:
    """Map a msgspec ValidationError message to a dead-letter reason."""
    for pattern, reason in VALIDATION_REASONS:
        if pattern.match(message):
            return reason
    return Reason.SCHEMA


def _malformed_reason(raw: bytes) -> Reason:
    """Why msgspec could not parse ``raw`` as JSON (error path only, so speed is moot).

    JSON has no NaN or Infinity, but Python's ``json.dumps`` writes them; a document that
    parses once those literals are allowed is reported as ``non_finite``.
    """
    if not _NON_FINITE_LITERAL.search(raw):
        return Reason.MALFORMED
    seen: list[str] = []

    def constant(name: str) -> float:
        seen.append(name)
        return 0.0

    try:
        json.loads(raw.decode("utf-8"), parse_constant=constant)
    except (ValueError, RecursionError):
        # Still not JSON with the literals allowed: plain malformed (the decoder's own
        # error is chained on the DecodeError the caller raises).
        return Reason.MALFORMED
    return Reason.NON_FINITE if seen else Reason.MALFORMED


def _detail(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


# ---------------------------------------------------------------------------- encoding


def encode(event: msgspec.Struct) -> bytes:
    """Encode an event as compact JSON (the wire format)."""
    return _ENCODER.encode(event)


def encode_many(events: Sequence[msgspec.Struct]) -> list[bytes]:
    """Encode each event (one Kafka record value each)."""
    return list(map(_ENCODER.encode, events))


# ------------------------------------------------------------------------------- times

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)


def ts_us(dt: datetime) -> int:
    """Exact integer microseconds since the epoch (UTC) of a tz-aware datetime."""
    return (dt - _EPOCH) // _ONE_US


def ts_s(dt: datetime) -> float:
    """Seconds since the epoch (UTC) as float64: exact microseconds / 10**6, correctly rounded."""
    return ts_us(dt) / 1_000_000


def from_ts_us(us: int) -> datetime:
    """The UTC datetime ``us`` microseconds after the epoch (inverse of :func:`ts_us`)."""
    return _EPOCH + timedelta(microseconds=us)


def utc_now() -> datetime:
    """The current time, tz-aware in UTC."""
    return datetime.now(UTC)


# ----------------------------------------------------------------------------- columns

_OBSERVATION_FIELDS: Final = attrgetter("variable", "ts", "value")
_FEEDBACK_FIELDS: Final = attrgetter("rule_id", "event_id", "ts", "success", "weight")
# rint(timestamp() * 1e6) is exact while |seconds| < 2**32 (until 2106): timestamp() is
# correctly rounded (error <= 0.24 us there) and the product adds <= 0.25 us, < 0.5 in all.
_EXACT_FLOAT_SECONDS: Final = 2.0**32


def ts_us_array(timestamps: Sequence[datetime]) -> npt.NDArray[np.int64]:
    """``ts_us`` of each tz-aware datetime, exact, faster than calling it per element.

    Decoded events are always aware; a naive value here would be read as local time.
    """
    seconds = ts_s_array(timestamps)
    micros = np.rint(seconds * 1e6).astype(np.int64)
    for i in np.flatnonzero(np.abs(seconds) >= _EXACT_FLOAT_SECONDS).tolist():
        micros[i] = ts_us(timestamps[i])
    return micros


def ts_s_array(timestamps: Sequence[datetime]) -> npt.NDArray[np.float64]:
    """``ts_s`` of each tz-aware datetime (``timestamp()`` of an aware value is the same
    correctly rounded microseconds / 10**6)."""
    return np.fromiter(map(datetime.timestamp, timestamps), np.float64, len(timestamps))


def observations_to_columns(events: Sequence[Observation]) -> ObservationColumns:
    """Columns of a batch's observations, in the given order."""
    if not events:
        return ObservationColumns([], np.empty(0, np.int64), np.empty(0, np.float64))
    variable, ts, value = zip(*map(_OBSERVATION_FIELDS, events), strict=True)
    return ObservationColumns(
        variable=list(variable),
        ts_us=ts_us_array(ts),
        value=np.array(value, np.float64),
    )


def feedback_to_columns(events: Sequence[Feedback]) -> FeedbackColumns:
    """Columns of a batch's feedback, in the given order."""
    if not events:
        empty = np.empty(0, np.float64)
        return FeedbackColumns([], [], empty, np.empty(0, np.bool_), empty.copy())
    rule_id, event_id, ts, success, weight = zip(*map(_FEEDBACK_FIELDS, events), strict=True)
    return FeedbackColumns(
        rule_id=list(rule_id),
        event_id=list(event_id),
        ts_s=ts_s_array(ts),
        success=np.array(success, np.bool_),
        weight=np.array(weight, np.float64),
    )


# ------------------------------------------------------------------------- JSON Schema

_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
_GENERATED_BY: Final = (
    "Generated from stream_trainer.events by `stream-trainer schemas export`; do not edit."
)


def snake_name(event_type: type[msgspec.Struct]) -> str:
    """``ModelVersion`` -> ``model_version``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", event_type.__name__).lower()


def json_schemas(
    types: Sequence[type[msgspec.Struct]] = EVENT_TYPES,
) -> dict[str, dict[str, Any]]:
    """JSON Schema (2020-12) of each event type, by snake-case name."""
    schemas: dict[str, dict[str, Any]] = {}
    for event_type in types:
        schema = msgspec.json.schema(event_type)
        schemas[snake_name(event_type)] = {
            "$schema": _SCHEMA_DIALECT,
            "$comment": _GENERATED_BY,
            **schema,
        }
    return schemas


def render_schemas(types: Sequence[type[msgspec.Struct]] = EVENT_TYPES) -> dict[str, str]:
    """File name -> exact file text, stable across runs (sorted keys, indent 2)."""
    return {
        f"{name}.schema.json": json.dumps(schema, sort_keys=True, indent=2) + "\n"
        for name, schema in json_schemas(types).items()
    }


def export_schemas(directory: Path) -> list[Path]:
    """Write one ``<snake_name>.schema.json`` per event type into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for file_name, text in render_schemas().items():
        path = directory / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_schemas(
    directory: Path, types: Sequence[type[msgspec.Struct]] = EVENT_TYPES
) -> list[str]:
    """Schema files in ``directory`` that are missing, differ from the code, or are extra."""
    expected = render_schemas(types)
    present = {path.name for path in directory.glob("*.schema.json")}
    stale = sorted(present - expected.keys())
    for file_name, text in sorted(expected.items()):
        path = directory / file_name
        if file_name not in present or path.read_text(encoding="utf-8") != text:
            stale.append(file_name)
    return stale
