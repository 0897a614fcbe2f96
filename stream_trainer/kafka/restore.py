"""Reading a task's changelog partition (read_committed) on assignment, from an offset.

Tombstones are kept (value None): a key whose latest record is a tombstone was deleted
(forget, or a dedupe bucket evicted) and must not come back from an older record.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError
from stream_trainer.kafka.clients import new_consumer, stop_consumer

FETCH_TIMEOUT_MS = 200
ChangelogRecords = list[tuple[bytes, bytes | None]]


@dataclass(slots=True)
class ChangelogTail:
    """Records of one changelog partition from `start` up to `end` (the next offset)."""

    start: int
    end: int
    records: ChangelogRecords = field(default_factory=list)


async def read_changelog(
    settings: Settings, starts: dict[int, int | None]
) -> dict[int, ChangelogTail]:
    """Committed records of each partition from its start offset (None: the beginning)."""
    if not starts:
        return {}
    consumer = new_consumer(
        settings,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    try:
        await consumer.start()
        return await _read(consumer, settings.changelog_topic, starts)
    except AioKafkaError as exc:
        raise KafkaError(f"changelog restore failed: {exc!r}", retriable=True) from exc
    finally:
        await stop_consumer(consumer)


async def _read(
    consumer: AIOKafkaConsumer, topic: str, starts: dict[int, int | None]
) -> dict[int, ChangelogTail]:
    tps = {p: TopicPartition(topic, p) for p in starts}
    consumer.assign(list(tps.values()))
    beginnings = await consumer.beginning_offsets(list(tps.values()))
    ends = await consumer.end_offsets(list(tps.values()))
    tails: dict[int, ChangelogTail] = {}
    for p, tp in tps.items():
        wanted = starts[p]
        # A start outside the log (a stale snapshot) falls back to the whole partition.
        start = wanted if wanted is not None and beginnings[tp] <= wanted <= ends[tp] else None
        tails[p] = ChangelogTail(beginnings[tp] if start is None else start, ends[tp])
        consumer.seek(tp, tails[p].start)
    pending = {tp for p, tp in tps.items() if tails[p].start < tails[p].end}
    by_partition: dict[int, ChangelogRecords] = defaultdict(list)
    while pending:
        fetched = await consumer.getmany(*pending, timeout_ms=FETCH_TIMEOUT_MS)
        for tp, batch in fetched.items():
            by_partition[tp.partition].extend((r.key, r.value) for r in batch if r.key is not None)
        # Past the last record there may be only transaction markers: test the position.
        pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    for p, records in by_partition.items():
        tails[p].records = records
    return tails
