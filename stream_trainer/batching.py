"""Micro-batching: raw Kafka records of one task -> `PendingBatch` -> `TrainingBatch`.

A *task* is one input partition number: partition n of the observation topic and partition
n of the feedback topic (co-partitioned, so all events of one model land in one task). The
`MicroBatcher` closes a task's batch when it holds `max_batch_events` records or
`max_batch_linger_ms` after its first record, whichever comes first. It only moves
references around, so it never blocks the event loop; decoding happens in `decode_batch`,
which the worker pool runs off the loop.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Generic, Literal, Protocol, TypeVar

from stream_trainer.columns import (
    FeedbackColumns,
    ObservationColumns,
    feedback_to_columns,
    observations_to_columns,
)
from stream_trainer.errors import DecodeError
from stream_trainer.events import (
    MAX_NAME_LENGTH,
    Feedback,
    Observation,
    decode_all_feedback,
    decode_all_observations,
    decode_feedback,
    decode_observation,
)

Kind = Literal["observation", "feedback"]
E = TypeVar("E", Observation, Feedback)


class KafkaRecord(Protocol):
    """The fields of an aiokafka ConsumerRecord that the trainer reads."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(slots=True)
class PendingBatch:
    """Undecoded records of one task, in offset order per topic."""

    task: int
    generation: int
    opened_at: float
    observations: list[KafkaRecord] = field(default_factory=list)
    feedback: list[KafkaRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.observations) + len(self.feedback)

    def next_offsets(self) -> dict[tuple[str, int], int]:
        """Offsets to commit once this batch is applied: last offset + 1 per partition."""
        offsets: dict[tuple[str, int], int] = {}
        for records in (self.observations, self.feedback):
            if records:
                last = records[-1]
                offsets[(last.topic, last.partition)] = last.offset + 1
        return offsets

    def absorb(self, later: PendingBatch) -> None:
        """Append a later batch of the same task and generation (coalescing a backlog)."""
        assert (later.task, later.generation) == (self.task, self.generation)
        self.observations.extend(later.observations)
        self.feedback.extend(later.feedback)

    def offset_span(self) -> str:
        """A deterministic id for the input this batch covers (same after a crash replay)."""
        parts = [f"{self.task}"]
        for records in (self.observations, self.feedback):
            parts.append(f"{records[0].offset}-{records[-1].offset}" if records else "-")
        return ":".join(parts)


@dataclass(frozen=True, slots=True)
class InvalidRecord:
    """An input record refused before or during learning, bound for the dead-letter topic."""

    record: KafkaRecord
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Forget:
    """A tombstone on an input topic: drop the model of `key` (rule or variable).

    It applies at `position` among the batch's valid events of its kind: events before it
    are learned by the old model, events after it start a new one.
    """

    kind: Kind
    position: int
    key: str
    record: KafkaRecord


@dataclass(frozen=True, slots=True)
class TrainingBatch:
    """The decoded events of one task's batch as numpy columns, plus what was refused."""

    task: int
    generation: int
    batch_id: str
    observations: ObservationColumns
    observation_records: list[KafkaRecord]
    feedback: FeedbackColumns
    feedback_records: list[KafkaRecord]
    invalid: list[InvalidRecord]
    next_offsets: dict[tuple[str, int], int]
    input_records: int
    opened_at: float
    forgets: list[Forget] = field(default_factory=list)

    def oldest_event_us(self) -> float | None:
        """The oldest event time of the batch's valid events (µs), None when it has none."""
        candidates = []
        if len(self.observations):
            candidates.append(float(self.observations.ts_us.min()))
        if len(self.feedback):
            candidates.append(float(self.feedback.ts_s.min()) * 1e6)
        return min(candidates) if candidates else None


class MicroBatcher:
    """Open batches per task, closed by size or linger."""

    def __init__(self, max_events: int, linger_ms: int) -> None:
        self._max_events = max_events
        self._linger_s = linger_ms / 1000.0
        self._open: dict[int, PendingBatch] = {}

    def add(
        self, task: int, generation: int, kind: Kind, records: Sequence[KafkaRecord], now: float
    ) -> list[PendingBatch]:
        """Append records to the task's open batch; return batches that reached full size."""
        closed: list[PendingBatch] = []
        start = 0
        while start < len(records):
            batch = self._open.get(task)
            if batch is None or batch.generation != generation:
                batch = self._open[task] = PendingBatch(task, generation, now)
            room = self._max_events - len(batch)
            chunk = records[start : start + room]
            (batch.observations if kind == "observation" else batch.feedback).extend(chunk)
            start += len(chunk)
            if len(batch) >= self._max_events:
                closed.append(self._open.pop(task))
        return closed

    def due(self, now: float) -> list[PendingBatch]:
        """Close and return every open batch whose linger has elapsed."""
        tasks = [t for t, b in self._open.items() if now - b.opened_at >= self._linger_s]
        return [self._open.pop(task) for task in tasks]

    def discard(self, task: int) -> int:
        """Drop a task's open batch (revoked or reset); returns how many records it held."""
        batch = self._open.pop(task, None)
        return len(batch) if batch else 0

    def seconds_until_due(self, now: float) -> float | None:
        """Time until the oldest open batch lingers out, or None when nothing is open."""
        if not self._open:
            return None
        oldest = min(b.opened_at for b in self._open.values())
        return max(0.0, oldest + self._linger_s - now)

    @property
    def open_records(self) -> int:
        return sum(len(b) for b in self._open.values())


def decode_batch(
    pending: PendingBatch, max_event_bytes: int, *, check_keys: bool = True
) -> TrainingBatch:
    """Decode a batch's records into columns; invalid records are kept with their reason.

    ``check_keys=False`` is for records that have no Kafka key (files).
    """
    invalid: list[InvalidRecord] = []
    forgets: list[Forget] = []
    observations, observation_records = _decode_records(
        pending.observations, _OBSERVATIONS, max_event_bytes, invalid, forgets, check_keys
    )
    feedback, feedback_records = _decode_records(
        pending.feedback, _FEEDBACK, max_event_bytes, invalid, forgets, check_keys
    )
    return TrainingBatch(
        task=pending.task,
        generation=pending.generation,
        batch_id=pending.offset_span(),
        observations=observations_to_columns(observations),
        observation_records=observation_records,
        feedback=feedback_to_columns(feedback),
        feedback_records=feedback_records,
        invalid=invalid,
        next_offsets=pending.next_offsets(),
        input_records=len(pending),
        opened_at=pending.opened_at,
        forgets=forgets,
    )


@dataclass(frozen=True, slots=True)
class _Input(Generic[E]):
    kind: Kind
    decode: Callable[..., E]
    decode_all: Callable[..., list[E] | None]
    name_of: Callable[[E], str]


_OBSERVATIONS = _Input(
    "observation", decode_observation, decode_all_observations, attrgetter("variable")
)
_FEEDBACK = _Input("feedback", decode_feedback, decode_all_feedback, attrgetter("rule_id"))
_VALUE = attrgetter("value")
_KEY = attrgetter("key")


def _decode_valid_batch(
    records: list[KafkaRecord], kind: _Input[E], max_event_bytes: int, check_keys: bool
) -> list[E] | None:
    """The events of records that are all valid (the common case), in one pass; else None."""
    events = kind.decode_all(list(map(_VALUE, records)), max_bytes=max_event_bytes)
    if events is None:
        return None
    if check_keys:
        names = map(str.encode, map(kind.name_of, events))
        if not all(map(operator.eq, map(_KEY, records), names)):
            return None
    return events


def _decode_records(
    records: list[KafkaRecord],
    kind: _Input[E],
    max_event_bytes: int,
    invalid: list[InvalidRecord],
    forgets: list[Forget],
    check_keys: bool,
) -> tuple[list[E], list[KafkaRecord]]:
    """Valid events with their records; the rest appended to `invalid` with a reason."""
    valid = _decode_valid_batch(records, kind, max_event_bytes, check_keys)
    if valid is not None:
        return valid, records
    events: list[E] = []
    kept: list[KafkaRecord] = []
    decode, name_of = kind.decode, kind.name_of
    for record in records:
        if record.value is None and record.key is not None and check_keys:
            _forget(record, kind.kind, len(events), invalid, forgets)
            continue
        try:
            event = decode(record.value, max_bytes=max_event_bytes)
        except DecodeError as exc:
            invalid.append(InvalidRecord(record, exc.reason, exc.detail))
            continue
        name = name_of(event)
        if check_keys and not _key_matches(record.key, name):
            invalid.append(InvalidRecord(record, "key_mismatch", _mismatch(record, name)))
            continue
        events.append(event)
        kept.append(record)
    return events, kept


def _forget(
    record: KafkaRecord,
    kind: Kind,
    position: int,
    invalid: list[InvalidRecord],
    forgets: list[Forget],
) -> None:
    """A keyed tombstone is a forget request, if its key is a valid name."""
    assert record.key is not None
    try:
        key = record.key.decode("utf-8")
    except UnicodeDecodeError:
        invalid.append(InvalidRecord(record, "malformed", "tombstone key is not UTF-8"))
        return
    if not 0 < len(key) <= MAX_NAME_LENGTH:
        invalid.append(InvalidRecord(record, "name_too_long", "tombstone key is not a name"))
        return
    forgets.append(Forget(kind, position, key, record))


def _key_matches(key: bytes | None, name: str) -> bool:
    return key is not None and key == name.encode("utf-8")


def _mismatch(record: KafkaRecord, name: str) -> str:
    key = record.key.decode("utf-8", "replace")[:80] if record.key is not None else None
    return f"record key {key!r} differs from the event's {name[:80]!r}"
