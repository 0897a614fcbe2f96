"""Connection options shared by every Kafka client the service creates (incl. security)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.helpers import create_ssl_context

from stream_trainer.config import Settings


def client_options(settings: Settings) -> dict[str, Any]:
    """bootstrap + security keyword arguments for aiokafka clients; secrets never logged."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.ssl_cafile or None,
            certfile=settings.ssl_certfile or None,
            keyfile=settings.ssl_keyfile or None,
        )
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.password()
    return options


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer, working around aiokafka 0.14's group-less `stop()`.

    `NoGroupCoordinator.close()` cancels its own background task and awaits it, so a
    consumer stopped soon after `start()` raises that task's CancelledError out of `stop()`.
    Only that one is swallowed: if *our* task is being cancelled, it propagates.
    """
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of a topic, fetching metadata if the consumer has none for it yet."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in sorted(partitions or ())]


async def read_to_end(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition], timeout_ms: int = 500
) -> AsyncIterator[tuple[TopicPartition, list[ConsumerRecord]]]:
    """Every record of `partitions` from the beginning to the end offsets captured now.

    The end is the last stable offset for a read_committed consumer, so a restore or a
    verifier stops at what is committed. Past the last record there may be only
    transaction markers, hence the position test rather than the last record's offset.
    """
    if not partitions:
        return
    consumer.assign(list(partitions))
    await consumer.seek_to_beginning(*partitions)
    ends = await consumer.end_offsets(list(partitions))
    pending = {tp for tp in partitions if ends[tp] > 0}
    while pending:
        fetched = await consumer.getmany(*pending, timeout_ms=timeout_ms)
        for tp, records in fetched.items():
            yield tp, records
        pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
