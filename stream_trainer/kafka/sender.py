"""Sending many records fast: one aiokafka BatchBuilder per topic-partition.

`producer.send()` costs tens of microseconds per record (a coroutine, metadata check and
accumulator lookup each time); a batch carries ~2 output records per input event, so that
cost would dominate. Building record batches ourselves and handing each to `send_batch`
does the per-record work in a tight loop. Keyed records go where the producer's default
partitioner (murmur2, as the Java client; vectorised in `partitioning`) would put them, so
compaction and readers see the same layout as with `send()`; `send_batch` registers each
partition with the open transaction, so this is safe under exactly-once.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from stream_trainer.errors import KafkaError
from stream_trainer.kafka.partitioning import default_partitions

Headers = list[tuple[str, bytes]]
NULL_VALUE_HEADER = ("value.null", b"1")


@dataclass(frozen=True, slots=True)
class OutputRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: Headers | None = None


async def send_records(
    producer: AIOKafkaProducer, records: Sequence[OutputRecord]
) -> list[tuple[str, asyncio.Future[Any]]]:
    """Queue every record; returns (topic, delivery future) per record batch sent.

    Partitioning and batch building are CPU work proportional to the records (a commit
    can hold tens of thousands): they run in a worker thread, so the event loop keeps
    serving heartbeats, fetches and queries meanwhile.
    """
    counts = await _partition_counts(producer, records)
    batches = await asyncio.to_thread(_build_batches, producer, records, counts)
    return [
        (topic, await producer.send_batch(builder, topic, partition=partition))
        for topic, partition, builder in batches
    ]


def _build_batches(
    producer: AIOKafkaProducer, records: Sequence[OutputRecord], counts: dict[str, int]
) -> list[tuple[str, int, Any]]:
    """Record batches per topic-partition, in record order within each."""
    groups: dict[tuple[str, int], list[OutputRecord]] = defaultdict(list)
    for record, partition in zip(records, _partitions(records, counts), strict=True):
        groups[(record.topic, partition)].append(record)
    batches: list[tuple[str, int, Any]] = []
    for (topic, partition), group in groups.items():
        builder = producer.create_batch()
        for record in group:
            if not _append(builder, record):
                batches.append((topic, partition, builder))
                builder = producer.create_batch()
                if not _append(builder, record):
                    raise KafkaError(f"a record for {topic} is larger than max_batch_size")
        batches.append((topic, partition, builder))
    return batches


def _append(builder: Any, record: OutputRecord) -> bool:
    key, value, headers = record.key, record.value, list(record.headers or ())
    if key is None and value is None:
        # Kafka allows a record with neither; aiokafka cannot send one. Keep it visible.
        value, headers = b"", [*headers, NULL_VALUE_HEADER]
    return builder.append(timestamp=None, key=key, value=value, headers=headers) is not None


async def _partition_counts(
    producer: AIOKafkaProducer, records: Sequence[OutputRecord]
) -> dict[str, int]:
    """Partition count of every topic a record is keyed to (fetching metadata if needed)."""
    counts: dict[str, int] = {}
    for topic in {r.topic for r in records if r.partition is None}:
        await producer.client._wait_on_metadata(topic)
        counts[topic] = len(producer._metadata.partitions_for_topic(topic))
    return counts


def _partitions(records: Sequence[OutputRecord], counts: dict[str, int]) -> list[int]:
    """Each record's partition: its own, else the default partitioner's for its key."""
    chosen = [r.partition for r in records]
    keyed: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        if record.partition is None:
            keyed[record.topic].append(i)
    for topic, positions in keyed.items():
        count = counts[topic]
        with_key = [i for i in positions if records[i].key is not None]
        hashed = default_partitions([records[i].key or b"" for i in with_key], count)
        for i, partition in zip(with_key, hashed.tolist(), strict=True):
            chosen[i] = partition
        for i in positions:
            if chosen[i] is None:  # no key: spread like the producer does
                chosen[i] = i % count
    return [int(p) for p in chosen if p is not None]
