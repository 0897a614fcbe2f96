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
from typing import Annotated, Final, Literal, TypeVar

import msgspec

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
_OBSERVATIONS_DECODER: Final = msgspec.json.Decoder(list[Observation])
_FEEDBACKS_DECODER: Final = msgspec.json.Decoder(list[Feedback])
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
    return _decode_one(_OBSERVATION_DECODER, raw, max_bytes)


def decode_feedback(raw: bytes | None, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Feedback:
    """Decode one ``pulse.feedback`` value, or raise DecodeError with a reason."""
    return _decode_one(_FEEDBACK_DECODER, raw, max_bytes)


def _decode_one(decoder: msgspec.json.Decoder[EventT], raw: bytes | None, max_bytes: int) -> EventT:
    # One cheap guard, one compiled decode; everything else is the error path.
    if raw is None or len(raw) > max_bytes or not raw.isascii():
        raw = _precheck(raw, max_bytes)
    try:
        return decoder.decode(raw)
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


def decode_all_observations(
    raws: Sequence[bytes | None], *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> list[Observation] | None:
    """Every value decoded in one call when all of them are valid, else None.

    The hot path: valid input is the rule, and one decode of the values joined as a JSON
    array skips a Python call per record. None sends the caller to `decode_observation`
    per record, which finds the reasons. Each value must parse as at least one element for
    the join to parse, so a count equal to the values' means one element each.
    """
    return _decode_all(_OBSERVATIONS_DECODER, raws, max_bytes)


def decode_all_feedback(
    raws: Sequence[bytes | None], *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> list[Feedback] | None:
    """Like `decode_all_observations`, for ``pulse.feedback`` values."""
    return _decode_all(_FEEDBACKS_DECODER, raws, max_bytes)


def _decode_all(
    decoder: msgspec.json.Decoder[list[EventT]], raws: Sequence[bytes | None], max_bytes: int
) -> list[EventT] | None:
    if not raws:
        return []
    try:
        joined = b",".join(raws)  # type: ignore[arg-type]  # a None raises TypeError
    except TypeError:
        return None
    if not joined.isascii() or max(map(len, raws)) > max_bytes:  # type: ignore[arg-type]
        return None
    try:
        events = decoder.decode(b"[" + joined + b"]")
    except (msgspec.DecodeError, RecursionError):
        return None
    return events if len(events) == len(raws) else None


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
