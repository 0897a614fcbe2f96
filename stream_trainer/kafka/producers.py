"""The trainer's producers: one transactional producer per task, or one shared one.

Under exactly-once each task has its own producer with the stable transactional id
``{application_id}-task-{n}`` (aiokafka has no KIP-447, so this is Kafka Streams' first EOS
design): starting it fences any zombie of the task and settles its open transaction.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError
from stream_trainer.kafka.clients import new_producer

log = logging.getLogger(__name__)


async def start_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """A started producer; a failure to reach the broker is a retriable `KafkaError`."""
    producer = new_producer(settings, **overrides)
    try:
        await producer.start()
    except AioKafkaError as exc:
        await producer.stop()
        raise KafkaError(f"cannot start producer: {exc!r}", retriable=True) from exc
    return producer


async def task_producer(settings: Settings, instance_id: str, task: int) -> AIOKafkaProducer | None:
    """The task's transactional producer, started; None under at-least-once."""
    if not settings.exactly_once:
        return None
    return await start_producer(
        settings,
        transactional_id=f"{settings.application_id}-task-{task}",
        client_id=f"{instance_id}-task-{task}",
        # A commit hands over whole record batches and then waits for them: lingering
        # would only add its delay to every transaction (~7 ms of 18 measured).
        linger_ms=0,
    )


async def stop_quietly(producer: AIOKafkaProducer, owner: str) -> None:
    """Stop a producer whose owner is going away; a failure is logged, not raised."""
    try:
        await producer.stop()
    except AioKafkaError:
        # The owner is being dropped; its open transaction (if any) is aborted by the
        # coordinator or fenced by the next owner, so nothing can leak out of it.
        log.warning("%s: producer did not stop cleanly", owner, exc_info=True)


async def abandon(producer: AIOKafkaProducer, owner: str) -> None:
    """Close a producer without delivering what it holds (Java's ``close(Duration.ZERO)``).

    For leaving while the broker is unreachable: `stop()` would wait for deliveries that
    aiokafka retries forever. An open transaction is aborted by the coordinator when it
    times out, or fenced by the task's next owner, so nothing it held becomes visible.
    """
    sender = producer._sender
    task = sender.sender_task if sender is not None else None
    # Cancelled again and again: its CancelledError handler awaits requests it retries.
    while task is not None and not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1.0)
    producer._closed = True
    try:
        await producer.client.close()
    except AioKafkaError:
        log.warning("%s: producer connections did not close cleanly", owner, exc_info=True)
