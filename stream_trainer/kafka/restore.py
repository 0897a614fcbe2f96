"""Reading a task's changelog partitions to the end (read_committed) on assignment."""

from __future__ import annotations

from collections import defaultdict

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError
from stream_trainer.kafka.clients import client_options, read_to_end, stop_consumer

FETCH_TIMEOUT_MS = 200


async def read_changelog(
    settings: Settings, partitions: list[int]
) -> dict[int, list[tuple[bytes, bytes]]]:
    """All committed changelog records of the given partitions, oldest first, by partition."""
    records: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    if not partitions:
        return records
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    try:
        await consumer.start()
        tps = [TopicPartition(settings.changelog_topic, p) for p in partitions]
        async for tp, batch in read_to_end(consumer, tps, FETCH_TIMEOUT_MS):
            records[tp.partition].extend(
                (r.key, r.value) for r in batch if r.key is not None and r.value is not None
            )
        return records
    except AioKafkaError as exc:
        raise KafkaError(f"changelog restore failed: {exc!r}", retriable=True) from exc
    finally:
        await stop_consumer(consumer)
