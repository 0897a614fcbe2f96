"""Smoke test of the broker every Kafka test uses: transactions and read_committed.

One transaction is aborted and one committed; a read_committed consumer in a group must
see exactly the committed records, in order, also after the broker crashed and came back.
(Checked by hand: with read_uncommitted it also sees the aborted records and fails.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream_trainer.dev.broker.local_broker import LocalKafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

PARTITIONS = 2
COMMITTED = [(b"k0", b"committed-0"), (b"k1", b"committed-1"), (b"k2", b"committed-2")]
ABORTED = [(b"k0", b"aborted-0"), (b"k1", b"aborted-1")]


@pytest.fixture
async def topic(kafka_bootstrap: str, unique_name: str) -> AsyncIterator[str]:
    await _admin(kafka_bootstrap, "create", unique_name)
    yield unique_name
    # A fresh client: a test may have restarted the broker under the first one.
    await _admin(kafka_bootstrap, "delete", unique_name)


async def _admin(bootstrap: str, action: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if action == "create":
            await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
        else:
            await admin.delete_topics([name])
    finally:
        await admin.close()


async def _produce_aborted_then_committed(bootstrap: str, topic: str, txn_id: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=txn_id, enable_idempotence=True
    )
    await producer.start()
    try:
        await producer.begin_transaction()
        for key, value in ABORTED:
            await producer.send_and_wait(topic, value, key=key, partition=0)
        await producer.abort_transaction()
        async with producer.transaction():
            for key, value in COMMITTED:
                await producer.send_and_wait(topic, value, key=key, partition=0)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str, group: str, expected: int) -> list[bytes]:
    """Consume until `expected` records arrived or the log end (past markers) is reached."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen: list[bytes] = []
        # Bounded by rounds, not wall-clock: each round waits at most 1 s for data.
        for _ in range(30):
            batch = await consumer.getmany(timeout_ms=1000)
            seen.extend(record.value for records in batch.values() for record in records)
            if len(seen) > expected:
                break
            if len(seen) == expected and await _at_end(consumer):
                break
        return seen
    finally:
        await consumer.stop()


async def _at_end(consumer: AIOKafkaConsumer) -> bool:
    partitions = consumer.assignment()
    if not partitions:
        return False
    # For read_committed, end_offsets is the last stable offset.
    ends = await consumer.end_offsets(list(partitions))
    positions = {tp: await consumer.position(tp) for tp in partitions}
    return all(positions[tp] >= ends[tp] for tp in partitions)


async def test_read_committed_sees_only_committed_records(
    kafka_bootstrap: str, topic: str, unique_name: str
) -> None:
    await _produce_aborted_then_committed(kafka_bootstrap, topic, f"{unique_name}-txn")

    seen = await _read_all(kafka_bootstrap, topic, f"{unique_name}-group", len(COMMITTED))

    assert seen == [value for _, value in COMMITTED]


async def test_committed_records_survive_a_broker_crash(
    kafka_bootstrap: str,
    local_broker: LocalKafkaBroker | None,
    topic: str,
    unique_name: str,
) -> None:
    if local_broker is None:
        pytest.skip("needs the restartable local broker, not an external cluster")
    await _produce_aborted_then_committed(kafka_bootstrap, topic, f"{unique_name}-txn")

    # SIGKILL then start, as the exactly-once tests do: same data dir, same address.
    local_broker.kill()
    assert local_broker.start() == kafka_bootstrap

    seen = await _read_all(kafka_bootstrap, topic, f"{unique_name}-group", len(COMMITTED))
    assert seen == [value for _, value in COMMITTED]
