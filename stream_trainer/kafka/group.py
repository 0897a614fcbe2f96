"""The trainer's group consumer: built from Settings, and the offset operations tasks need.

Range assignment gives partition n of both input topics to the same member (the task n).
Offsets are committed by the tasks' transactions (exactly-once) or by `commit_offsets`
(at-least-once); a reset task is sought back to its committed offsets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError
from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError, TaskFencedError
from stream_trainer.kafka.clients import new_consumer
from stream_trainer.kafka.errors import wrap


class RebalanceRelay(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands rebalances (as sets of task numbers) on; an error is kept for the caller.

    aiokafka logs and swallows a listener's exception, which would leave the member in the
    group with tasks it never restored: a silent stall. The consume loop raises `error`.
    """

    def __init__(
        self,
        on_revoked: Callable[[set[int]], Awaitable[None]],
        on_assigned: Callable[[set[int]], Awaitable[None]],
    ) -> None:
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned
        self.error: BaseException | None = None

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._relay(self._on_revoked, revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._relay(self._on_assigned, assigned)

    async def _relay(
        self, handler: Callable[[set[int]], Awaitable[None]], partitions: Iterable[TopicPartition]
    ) -> None:
        try:
            await handler({tp.partition for tp in partitions})
        except Exception as exc:
            self.error = self.error or exc
            raise


def group_consumer(settings: Settings, instance_id: str) -> AIOKafkaConsumer:
    s = settings
    return new_consumer(
        s,
        group_id=s.application_id,
        client_id=instance_id,
        auto_offset_reset=s.auto_offset_reset,
        partition_assignment_strategy=(RangePartitionAssignor,),
        group_instance_id=s.group_instance_id or None,
        session_timeout_ms=s.session_timeout_ms,
        heartbeat_interval_ms=max(100, s.session_timeout_ms // 3),
        max_partition_fetch_bytes=2 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )


def input_partitions(settings: Settings, task: int) -> list[TopicPartition]:
    return [
        TopicPartition(settings.topic_observations, task),
        TopicPartition(settings.topic_feedback, task),
    ]


def owned(consumer: AIOKafkaConsumer, settings: Settings, task: int) -> list[TopicPartition]:
    """The task's input partitions this member holds now (none once it is revoked)."""
    assigned = consumer.assignment()
    return [tp for tp in input_partitions(settings, task) if tp in assigned]


async def commit_offsets(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    try:
        await consumer.commit(offsets)
    except CommitFailedError as exc:
        raise TaskFencedError(f"offset commit failed (rebalanced): {exc!r}") from exc
    except AioKafkaError as exc:
        raise KafkaError(f"offset commit failed: {exc!r}", retriable=True) from exc


async def seek_committed(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], reset: str
) -> dict[TopicPartition, int]:
    """Rewind owned partitions to their committed offsets (or the reset policy)."""
    found: dict[TopicPartition, int] = {}
    assigned = consumer.assignment()
    for tp in partitions:
        if tp not in assigned:
            continue
        try:
            committed = await consumer.committed(tp)
            if committed is not None:
                consumer.seek(tp, committed)
                found[tp] = committed
            elif reset == "earliest":
                await consumer.seek_to_beginning(tp)
            else:
                await consumer.seek_to_end(tp)
        except AioKafkaError as exc:
            raise KafkaError(f"cannot seek to committed offsets: {exc!r}", retriable=True) from exc
    return found


async def seek_uncommitted_to_time(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], start: datetime
) -> None:
    """Replay from a time: partitions without a committed offset start at `start`."""
    fresh = [tp for tp in partitions if await consumer.committed(tp) is None]
    if not fresh:
        return
    start_ms = int(start.timestamp() * 1000)
    found = await consumer.offsets_for_times({tp: start_ms for tp in fresh})
    for tp in fresh:
        hit = found.get(tp)
        if hit is None:
            await consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, hit.offset)


async def end_offsets(
    consumer: AIOKafkaConsumer, settings: Settings, partitions: int
) -> dict[TopicPartition, int]:
    """End offsets of every input partition (for ``--until-end``)."""
    tps = [tp for task in range(partitions) for tp in input_partitions(settings, task)]
    try:
        return dict(await consumer.end_offsets(tps))
    except AioKafkaError as exc:
        raise wrap("cannot read the input end offsets", exc) from exc
