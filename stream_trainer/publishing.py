"""A batch's outputs (versions, metrics, dead letters, changelog) and the one place they commit.

Commit order follows the checkpoint discipline of Kafka Streams / Quix Streams: produce every
output and changelog record, then the input offsets, then commit. Under exactly-once all of
it is one transaction of the task's own producer; under at-least-once the producer is
flushed before the consumer commits offsets, so a crash can only repeat, never lose.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.errors import ProducerFenced

from stream_trainer import __version__
from stream_trainer.batching import InvalidRecord
from stream_trainer.config import Settings
from stream_trainer.errors import DeadLetterError, KafkaError, TaskFencedError
from stream_trainer.events import TrainingMetrics, encode
from stream_trainer.kafka.sender import Headers, OutputRecord, send_records
from stream_trainer.state import AppliedBatch


@dataclass(frozen=True, slots=True)
class BatchOutputs:
    """Everything one batch writes, and the input offsets it consumed."""

    records: list[OutputRecord]
    dead_letter_count: int
    offsets: dict[TopicPartition, int]
    metrics: TrainingMetrics


def build_outputs(
    applied: AppliedBatch, settings: Settings, instance_id: str, duration_s: float
) -> BatchOutputs:
    """Turn an applied batch into output records; `duration_s` is its decode+learn time."""
    batch = applied.batch
    records = [
        OutputRecord(settings.topic_rule_versions, v.rule_id.encode(), encode(v))
        for v in applied.rule_versions
    ]
    records.extend(
        OutputRecord(settings.topic_model_versions, v.model_id.encode(), encode(v))
        for v in applied.model_versions
    )
    records.extend(_dead_letter(settings.topic_dead_letter, inv) for inv in applied.invalid)
    records.extend(
        OutputRecord(settings.changelog_topic, key, value, partition=batch.task)
        for key, value in applied.changelog
    )
    metrics = training_metrics(applied, duration_s)
    records.append(
        OutputRecord(settings.topic_training_metrics, instance_id.encode(), encode(metrics))
    )
    offsets = {TopicPartition(t, p): o for (t, p), o in batch.next_offsets.items()}
    return BatchOutputs(records, len(applied.invalid), offsets, metrics)


def training_metrics(applied: AppliedBatch, duration_s: float) -> TrainingMetrics:
    batch = applied.batch
    oldest = _oldest_event_ts_us(applied)
    published_us = applied.published_at.timestamp() * 1e6
    return TrainingMetrics(
        batch_id=batch.batch_id,
        observations=applied.observations_applied,
        feedback=applied.feedback_applied,
        invalid=len(applied.invalid),
        models_updated=len(applied.model_versions),
        rules_updated=len(applied.rule_versions),
        duration_ms=duration_s * 1000.0,
        max_event_age_ms=(published_us - oldest) / 1000.0 if oldest is not None else 0.0,
        published_at=applied.published_at,
    )


def _oldest_event_ts_us(applied: AppliedBatch) -> float | None:
    batch = applied.batch
    candidates = []
    if len(batch.observations):
        candidates.append(float(batch.observations.ts_us.min()))
    if len(batch.feedback):
        candidates.append(float(batch.feedback.ts_s.min()) * 1e6)
    return min(candidates) if candidates else None


def _dead_letter(topic: str, invalid: InvalidRecord) -> OutputRecord:
    record = invalid.record
    headers: Headers = [
        ("reason", invalid.reason.encode()),
        ("error", invalid.detail[:500].encode("utf-8", "replace")),
        ("source.topic", record.topic.encode()),
        ("source.partition", str(record.partition).encode()),
        ("source.offset", str(record.offset).encode()),
        ("trainer.version", __version__.encode()),
    ]
    return OutputRecord(topic, record.key, record.value, headers=headers)


class Committer(Protocol):
    """Publishes a batch's outputs and commits its input offsets, atomically or in order."""

    async def commit(self, outputs: BatchOutputs) -> None: ...


async def _deliver(
    producer: AIOKafkaProducer, records: Sequence[OutputRecord], dead_letter_topic: str
) -> None:
    """Send and wait for every record; raise if any was refused (dead letters: fatally)."""
    sent = await send_records(producer, records)
    if sent:
        await asyncio.wait([fut for _, fut in sent])
    _raise_for_failed_sends(sent, dead_letter_topic)


def _raise_for_failed_sends(
    sent: Sequence[tuple[str, asyncio.Future[Any]]], dead_letter_topic: str
) -> None:
    for topic, fut in sent:
        if fut.done() and not fut.cancelled() and fut.exception() is not None:
            exc = fut.exception()
            if topic == dead_letter_topic:
                raise DeadLetterError(
                    f"cannot write to dead-letter topic {topic}: {exc!r}"
                ) from exc
            retriable = bool(getattr(exc, "retriable", False))
            raise KafkaError(f"cannot write to {topic}: {exc!r}", retriable=retriable) from exc


class TransactionalCommitter:
    """Exactly-once: outputs, changelog and input offsets in one transaction of the task."""

    def __init__(self, producer: AIOKafkaProducer, group_id: str, dead_letter_topic: str) -> None:
        self._producer = producer
        self._group_id = group_id
        self._dead_letter_topic = dead_letter_topic

    async def commit(self, outputs: BatchOutputs) -> None:
        producer = self._producer
        try:
            await producer.begin_transaction()
        except ProducerFenced as exc:
            raise TaskFencedError(f"producer fenced: {exc!r}") from exc
        except AioKafkaError as exc:
            raise KafkaError(f"cannot begin transaction: {exc!r}", retriable=True) from exc
        try:
            # Every record must be delivered before the offsets join the transaction:
            # aiokafka would commit a transaction even when one of its sends failed.
            await _deliver(producer, outputs.records, self._dead_letter_topic)
            await producer.send_offsets_to_transaction(outputs.offsets, self._group_id)
            await producer.commit_transaction()
        except ProducerFenced as exc:
            raise TaskFencedError(f"producer fenced: {exc!r}") from exc
        except KafkaError:
            await self._abort()
            raise
        except (TimeoutError, AioKafkaError) as exc:
            await self._abort()
            raise KafkaError(
                f"transaction failed and was aborted: {exc!r}", retriable=True
            ) from exc

    async def _abort(self) -> None:
        try:
            await self._producer.abort_transaction()
        except ProducerFenced as exc:
            raise TaskFencedError(f"producer fenced while aborting: {exc!r}") from exc
        except AioKafkaError as exc:
            # The transaction coordinator aborts it on timeout anyway; the task is reset.
            raise KafkaError(f"abort failed: {exc!r}", retriable=True) from exc


class AtLeastOnceCommitter:
    """At-least-once: publish and flush, then commit the input offsets."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        commit_offsets: Callable[[dict[TopicPartition, int]], Awaitable[None]],
        dead_letter_topic: str,
    ) -> None:
        self._producer = producer
        self._commit_offsets = commit_offsets
        self._dead_letter_topic = dead_letter_topic

    async def commit(self, outputs: BatchOutputs) -> None:
        try:
            await _deliver(self._producer, outputs.records, self._dead_letter_topic)
        except AioKafkaError as exc:
            raise KafkaError(f"publishing failed: {exc!r}", retriable=True) from exc
        await self._commit_offsets(outputs.offsets)
