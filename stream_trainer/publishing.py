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
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka import errors as aio
from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer import __version__
from stream_trainer.batching import InvalidRecord
from stream_trainer.config import Settings
from stream_trainer.errors import DeadLetterError, KafkaError
from stream_trainer.events import TrainingMetrics, encode
from stream_trainer.kafka.errors import is_retriable, wrap
from stream_trainer.kafka.sender import Headers, OutputRecord, send_records
from stream_trainer.state import Publication

if TYPE_CHECKING:
    from stream_trainer.checkpoint import PendingCommit


@dataclass(frozen=True, slots=True)
class BatchOutputs:
    """Everything one commit writes, and the input offsets it consumed."""

    records: list[OutputRecord]
    offsets: dict[TopicPartition, int]
    metrics: TrainingMetrics
    invalid: list[InvalidRecord]
    publication: Publication


def build_outputs(
    task: int,
    pending: PendingCommit,
    publication: Publication,
    settings: Settings,
    instance_id: str,
    published_at: datetime,
) -> BatchOutputs:
    """Output records of one commit: versions, dead letters, changelog, one metrics record."""
    records = [OutputRecord(topic, key, value) for topic, key, value in publication.versions]
    records.extend(_dead_letter(settings.topic_dead_letter, inv) for inv in pending.invalid)
    records.extend(
        OutputRecord(settings.changelog_topic, key, value, partition=task)
        for key, value in publication.changelog
    )
    metrics = training_metrics(pending, publication, published_at)
    records.append(
        OutputRecord(settings.topic_training_metrics, instance_id.encode(), encode(metrics))
    )
    return BatchOutputs(records, dict(pending.offsets), metrics, pending.invalid, publication)


def training_metrics(
    pending: PendingCommit, publication: Publication, published_at: datetime
) -> TrainingMetrics:
    """One record per commit, covering every batch it holds (DESIGN section 2)."""
    oldest = pending.oldest_event_us
    published_us = published_at.timestamp() * 1e6
    return TrainingMetrics(
        batch_id=pending.batch_id,
        observations=pending.applied.get("model", 0),
        feedback=pending.applied.get("rule", 0),
        invalid=len(pending.invalid),
        models_updated=publication.updated.get("model", 0),
        rules_updated=publication.updated.get("rule", 0),
        duration_ms=pending.learn_seconds * 1000.0,
        max_event_age_ms=(published_us - oldest) / 1000.0 if oldest is not None else 0.0,
        published_at=published_at,
    )


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


# The first offset written per (topic, partition) by one commit.
FirstOffsets = dict[tuple[str, int], int]


class Committer(Protocol):
    """Publishes a commit's outputs and its input offsets, atomically or in order."""

    async def commit(self, outputs: BatchOutputs) -> FirstOffsets: ...


async def _deliver(
    producer: AIOKafkaProducer, records: Sequence[OutputRecord], dead_letter_topic: str
) -> FirstOffsets:
    """Send and wait for every record; raise if any was refused (dead letters: fatally)."""
    sent = await send_records(producer, records)
    if sent:
        await asyncio.wait([fut for _, fut in sent])
    _raise_for_failed_sends(sent, dead_letter_topic)
    first: FirstOffsets = {}
    for _, fut in sent:
        meta = fut.result()
        where = (meta.topic, meta.partition)
        first[where] = min(meta.offset, first.get(where, meta.offset))
    return first


def _raise_for_failed_sends(
    sent: Sequence[tuple[str, asyncio.Future[Any]]], dead_letter_topic: str
) -> None:
    # Every failure is read (so none is logged as "never retrieved"); the first is raised.
    failed = [
        (topic, exc)
        for topic, fut in sent
        if fut.done() and not fut.cancelled() and (exc := fut.exception()) is not None
    ]
    for topic, exc in failed[:1]:
        if exc is not None:
            if topic == dead_letter_topic and not is_retriable(exc):
                raise DeadLetterError(
                    f"cannot write to dead-letter topic {topic}: {exc!r}"
                ) from exc
            raise wrap(f"cannot write to {topic}", exc) from exc


class TransactionalCommitter:
    """Exactly-once: outputs, changelog and input offsets in one transaction of the task."""

    def __init__(self, producer: AIOKafkaProducer, group_id: str, dead_letter_topic: str) -> None:
        self._producer = producer
        self._group_id = group_id
        self._dead_letter_topic = dead_letter_topic

    async def commit(self, outputs: BatchOutputs) -> FirstOffsets:
        producer = self._producer
        try:
            await producer.begin_transaction()
        except AioKafkaError as exc:
            raise wrap("cannot begin transaction", exc) from exc
        try:
            # Every record must be delivered before the offsets join the transaction:
            # aiokafka would commit a transaction even when one of its sends failed.
            first = await _deliver(producer, outputs.records, self._dead_letter_topic)
            await producer.send_offsets_to_transaction(outputs.offsets, self._group_id)
            await producer.commit_transaction()
        except aio.ProducerFenced as exc:
            raise wrap("transaction", exc) from exc
        except KafkaError:
            await self._abort()
            raise
        except (TimeoutError, AioKafkaError) as exc:
            await self._abort()
            raise wrap("transaction failed and was aborted", exc) from exc
        return first

    async def _abort(self) -> None:
        try:
            await self._producer.abort_transaction()
        except AioKafkaError as exc:
            # The transaction coordinator aborts it on timeout anyway; the task is reset.
            raise wrap("abort failed", exc) from exc


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

    async def commit(self, outputs: BatchOutputs) -> FirstOffsets:
        try:
            first = await _deliver(self._producer, outputs.records, self._dead_letter_topic)
        except AioKafkaError as exc:
            raise wrap("publishing failed", exc) from exc
        await self._commit_offsets(outputs.offsets)
        return first
