"""The Kafka side of a view: assignment from the beginning, catch-up targets, new partitions."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from stream_trainer.kafka.clients import topic_partitions

log = logging.getLogger(__name__)

POLL_MS: Final = 500


class Reader:
    """The Kafka side of a view: assignment, catch-up targets, new partitions."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        self.consumer = consumer
        self.topic = topic
        self.pending: dict[TopicPartition, int] | None = None  # end offsets not reached yet

    async def start_reading(self) -> None:
        """Assign every partition from the beginning and take the catch-up targets."""
        tps = await topic_partitions(self.consumer, self.topic)
        if not tps:
            log.warning("topic %s does not exist (yet): the view starts empty", self.topic)
            self.pending = {}
            return
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        ends = await self.consumer.end_offsets(tps)
        self.pending = {tp: end for tp, end in ends.items() if end > 0}

    async def poll(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        if not self.consumer.assignment():
            await asyncio.sleep(POLL_MS / 1000)
            return {}
        fetched: dict[TopicPartition, list[ConsumerRecord]] = await self.consumer.getmany(
            timeout_ms=POLL_MS
        )
        return fetched

    async def caught_up(self) -> bool:
        """Every partition's position reached its target (positions skip txn markers)."""
        assert self.pending is not None
        self.pending = {
            tp: end for tp, end in self.pending.items() if await self.consumer.position(tp) < end
        }
        return not self.pending

    async def follow_new_partitions(self) -> None:
        """Add partitions the topic gained (metadata refreshes every metadata_max_age_ms)."""
        known = set(self.consumer.assignment())
        current = self.consumer.partitions_for_topic(self.topic) or set()
        new = [tp for p in sorted(current) if (tp := TopicPartition(self.topic, p)) not in known]
        if not new:
            return
        # assign() replaces the assignment and forgets positions: put them back.
        positions = {tp: await self.consumer.position(tp) for tp in known}
        self.consumer.assign([*known, *new])
        for tp, offset in positions.items():
            self.consumer.seek(tp, offset)
        await self.consumer.seek_to_beginning(*new)
        log.info("following %d new partition(s) of %s from the beginning", len(new), self.topic)
