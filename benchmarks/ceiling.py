"""The ceiling: a plain aiokafka consumer that reads and msgspec-decodes every event, no more."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.common import Topics
from stream_trainer.events import Feedback, Observation
from stream_trainer.kafka.clients import stop_consumer


async def run_ceiling(bootstrap: str, topics: Topics, total: int) -> dict[str, Any]:
    """Read both input topics from the beginning to the end; events/s of read + decode."""
    decoders = {
        topics.observations: msgspec.json.Decoder(Observation).decode,
        topics.feedback: msgspec.json.Decoder(Feedback).decode,
    }
    started = time.monotonic()
    # The same fetch sizes as the trainer's consumer, so only the work differs.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=2 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    decoded = 0
    try:
        tps = await _partitions(consumer, list(decoders))
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        first_record_at: float | None = None
        while decoded < total:
            fetched = await consumer.getmany(timeout_ms=500)
            if first_record_at is None and fetched:
                first_record_at = time.monotonic()
            for tp, records in fetched.items():
                decode = decoders[tp.topic]
                for record in records:
                    decode(record.value)
                decoded += len(records)
        finished = time.monotonic()
    finally:
        await stop_consumer(consumer)
    assert first_record_at is not None
    return {
        "events": decoded,
        "wall_s": finished - started,
        "events_per_s": decoded / (finished - started),
        "steady_events_per_s": decoded / (finished - first_record_at),
    }


async def _partitions(consumer: AIOKafkaConsumer, topics: list[str]) -> list[TopicPartition]:
    """Every partition of the topics (metadata for a topic nobody asked about yet may lag)."""
    for _ in range(50):
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        if {tp.topic for tp in tps} == set(topics):
            return tps
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topics {topics} not found")
