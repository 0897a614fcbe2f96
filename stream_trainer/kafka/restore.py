"""Reading a task's changelog partitions to the end (read_committed) on assignment."""

from __future__ import annotations

from collections import defaultdict

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError
from stream_trainer.kafka.clients import client_options, stop_consumer

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
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=FETCH_TIMEOUT_MS)
            for tp, batch in fetched.items():
                records[tp.partition].extend(
                    (r.key, r.value) for r in batch if r.key is not None and r.value is not None
                )
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return records
    except AioKafkaError as exc:
        raise KafkaError(f"changelog restore failed: {exc!r}", retriable=True) from exc
    finally:
        await stop_consumer(consumer)
