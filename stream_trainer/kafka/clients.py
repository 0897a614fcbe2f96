"""Every Kafka client the project creates: options from `Settings` (security included),
the factories that build consumers, producers and admin clients, and helpers to use them.

Callers pass only what is theirs (a group id, a transactional id, a client id, fetch sizes)
as keyword overrides; everything else is decided here, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from stream_trainer.config import Settings

# Our consumers read what producers committed and never auto-commit: the service commits
# offsets itself (in its transactions), every other reader only reads.
CONSUMER_DEFAULTS: Final[Mapping[str, Any]] = {
    "enable_auto_commit": False,
    "isolation_level": "read_committed",
}
# Durable, ordered, without duplicates on retry; batches big enough for a burst of versions.
PRODUCER_DEFAULTS: Final[Mapping[str, Any]] = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 5,
    "max_batch_size": 256 * 1024,
    "max_request_size": 4 * 1024 * 1024,
}


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


def consumer_options(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of an `AIOKafkaConsumer`: connection, CONSUMER_DEFAULTS, overrides."""
    return {**client_options(settings), **CONSUMER_DEFAULTS, **overrides}


def producer_options(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of an `AIOKafkaProducer`: connection, PRODUCER_DEFAULTS, overrides."""
    return {**client_options(settings), **PRODUCER_DEFAULTS, **overrides}


def admin_options(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of an `AIOKafkaAdminClient`: connection, then overrides."""
    return {**client_options(settings), **overrides}


# Build clients inside a running event loop: aiokafka binds each one to the current loop.


def new_consumer(settings: Settings, **overrides: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(**consumer_options(settings, **overrides))


def new_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(**producer_options(settings, **overrides))


def new_admin(settings: Settings, **overrides: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**admin_options(settings, **overrides))


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
