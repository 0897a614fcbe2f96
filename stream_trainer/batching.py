"""Micro-batching: raw Kafka records of one task -> `PendingBatch` -> `TrainingBatch`.

A *task* is one input partition number: partition n of the observation topic and partition
n of the feedback topic (co-partitioned, so all events of one model land in one task). The
`MicroBatcher` closes a task's batch when it holds `max_batch_events` records or
`max_batch_linger_ms` after its first record, whichever comes first. It only moves
references around, so it never blocks the event loop; decoding happens in `decode_batch`,
which the worker pool runs off the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from stream_trainer.columns import FeedbackColumns, ObservationColumns
from stream_trainer.errors import DecodeError
from stream_trainer.events import (
    Feedback,
    Observation,
    decode_feedback,
    decode_observation,
    feedback_to_columns,
    observations_to_columns,
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

    def flush(self) -> list[PendingBatch]:
        """Close every open batch (drain on shutdown)."""
        batches = list(self._open.values())
        self._open.clear()
        return batches

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


def decode_batch(pending: PendingBatch, max_event_bytes: int) -> TrainingBatch:
    """Decode a batch's records into columns; invalid records are kept with their reason."""
    invalid: list[InvalidRecord] = []
    observations, observation_records = _decode_records(
        pending.observations, decode_observation, _variable, max_event_bytes, invalid
    )
    feedback, feedback_records = _decode_records(
        pending.feedback, decode_feedback, _rule_id, max_event_bytes, invalid
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
    )


def _decode_records(
    records: list[KafkaRecord],
    decode: Callable[..., E],
    name_of: Callable[[E], str],
    max_event_bytes: int,
    invalid: list[InvalidRecord],
) -> tuple[list[E], list[KafkaRecord]]:
    """Valid events with their records; the rest appended to `invalid` with a reason."""
    events: list[E] = []
    kept: list[KafkaRecord] = []
    for record in records:
        try:
            event = decode(record.value, max_bytes=max_event_bytes)
        except DecodeError as exc:
            invalid.append(InvalidRecord(record, exc.reason, exc.detail))
            continue
        name = name_of(event)
        if not _key_matches(record.key, name):
            invalid.append(InvalidRecord(record, "key_mismatch", _mismatch(record, name)))
            continue
        events.append(event)
        kept.append(record)
    return events, kept


def _variable(event: Observation) -> str:
    return event.variable


def _rule_id(event: Feedback) -> str:
    return event.rule_id


def _key_matches(key: bytes | None, name: str) -> bool:
    return key is not None and key == name.encode("utf-8")


def _mismatch(record: KafkaRecord, name: str) -> str:
    key = record.key.decode("utf-8", "replace")[:80] if record.key is not None else None
    return f"record key {key!r} differs from the event's {name[:80]!r}"
